"""A partition whose rows are (mostly) quarantined is a failed partition, not "ok"; its quarantine is kept."""

from __future__ import annotations

import polars as pl
import pyarrow.dataset as ds
import pytest
import yaml

from flows.lake_pipeline import PartitionFailures, lake_pipeline
from sae_pipeline.config import load_config
from sae_pipeline.ledger import Ledger
from sae_pipeline.runs import RunSummary
from tests.conftest import write_lake_config


def _fail(config_path) -> RunSummary:
    with pytest.raises(PartitionFailures) as raised:
        lake_pipeline(str(config_path))
    return raised.value.summary


@pytest.mark.usefixtures("prefect_harness")
def test_fully_quarantined_partition_fails_and_keeps_its_rows(tmp_path):
    config_path = write_lake_config(tmp_path, days=3, rows_per_day=300, max_steps=50)
    raw = yaml.safe_load(config_path.read_text())
    raw["training"]["partitions"] = ["day=2026-11-01", "day=2026-11-02"]
    config_path.write_text(yaml.safe_dump(raw))
    bad = tmp_path / "lake" / "day=2026-11-03" / "part-0.parquet"
    pl.read_parquet(bad).with_columns(cpu_pct=pl.lit(500.0)).write_parquet(bad)

    summary = _fail(config_path)
    (failed,) = summary.failed
    assert failed.partition == "day=2026-11-03"
    assert "300 of 300 rows quarantined" in failed.error and "cpu_pct" in failed.error
    assert "rule: scoring.max_quarantine_share" in failed.error
    config = load_config(config_path)
    assert ds.dataset(f"{config.output.quarantine_uri}/day=2026-11-03").count_rows() == 300  # nothing lost
    assert not (tmp_path / "out" / "scored" / "day=2026-11-03").exists()
    assert set(Ledger(config.output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-02"}  # retried next run

    # The threshold is a real setting: at 1% the ordinary partitions (about 2% invalid rows) fail too.
    raw["scoring"]["max_quarantine_share"] = 0.01
    config_path.write_text(yaml.safe_dump(raw))
    summary = _fail(config_path)
    assert sorted(failure.partition for failure in summary.failed) == ["day=2026-11-03"]  # others are up to date
    summary = lake_pipeline_backfill_failures(config_path)
    assert sorted(failure.partition for failure in summary.failed) == [
        "day=2026-11-01",
        "day=2026-11-02",
        "day=2026-11-03",
    ]


def lake_pipeline_backfill_failures(config_path) -> RunSummary:
    with pytest.raises(PartitionFailures) as raised:
        lake_pipeline(str(config_path), backfill=True)
    return raised.value.summary
