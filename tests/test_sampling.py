"""The training sample: bounded, reproducible, valid rows only, streamed batch by batch."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sae_pipeline import hive
from sae_pipeline.config import MODEL_ROLES, load_config
from sae_pipeline.sampling import sample_valid_rows
from sae_pipeline.schema import validate_frame
from tests.conftest import write_lake_config


def test_sample_is_bounded_reproducible_and_holds_only_valid_model_columns(tmp_path):
    config = load_config(write_lake_config(tmp_path, days=3, rows_per_day=900))
    partitions = hive.partition_records(config.lake)
    first = sample_valid_rows(config, partitions, max_rows=1_000, seed=7, batch_rows=128)
    again = sample_valid_rows(config, partitions, max_rows=1_000, seed=7, batch_rows=128)
    assert first.frame.equals(again.frame)
    assert 950 <= first.frame.height <= 1_000
    assert first.rows_read == 2_700 and first.rows_valid < first.rows_read  # the sample lake holds invalid rows
    assert first.frame.columns == [column.name for column in config.columns_with_role(*MODEL_ROLES)]
    model_columns = first.frame.columns
    valid = pl.concat(
        [validate_frame(pl.read_parquet(p.uri), config, source=p.name).valid.select(model_columns) for p in partitions]
    )
    assert first.frame.join(valid.unique(), on=model_columns, how="anti", nulls_equal=True).is_empty()
    assert first.partitions == [partition.name for partition in partitions] and first.failed == []


def test_a_partition_that_breaks_the_schema_in_a_later_batch_contributes_nothing(tmp_path):
    config = load_config(write_lake_config(tmp_path, days=2, rows_per_day=600))
    partitions = hive.partition_records(config.lake)
    broken = Path(partitions[1].uri)
    good_file = next(broken.glob("*.parquet"))
    good = pl.read_parquet(good_file)
    good.drop(config.columns_with_role(*MODEL_ROLES)[0].name).write_parquet(broken / "part-1.parquet")
    sample = sample_valid_rows(config, partitions, max_rows=10_000, seed=0, batch_rows=128)
    assert [failure.partition for failure in sample.failed] == [partitions[1].name]
    assert sample.partitions == [partitions[0].name]
    assert sample.rows_read == 600 and sample.frame.height == sample.rows_valid
