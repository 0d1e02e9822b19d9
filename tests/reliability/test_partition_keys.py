"""Partition key values are checked against their declared type before anything reads the partition."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from flows.lake_pipeline import PartitionFailures, lake_pipeline
from sae_pipeline import hive
from sae_pipeline.config import load_config
from sae_pipeline.ledger import Ledger
from sae_pipeline.records import split_refused
from tests.conftest import write_lake_config

REFUSED = {
    "day=notadate": "is not a date",
    "day=2026-13-01": "is not a date",
    "day=20261101": "is not a date",
    "day=": "empty partition value",
    "day=__HIVE_DEFAULT_PARTITION__": "null partition value",
    "day=..%2F..%2Fescape": "could escape the table",
    "day=..": "could escape the table",
    "day=a%5Cb": "could escape the table",
}


@pytest.mark.parametrize(
    ("key_type", "value", "problem"),
    [
        ("date", "2026-11-01", None),
        ("date", "notadate", "not a date"),
        ("date", "2026-02-30", "not a date"),
        ("int", "42", None),
        ("int", "-7", None),
        ("int", "4.2", "not an integer"),
        ("int", "x", "not an integer"),
        ("string", "us east", None),
        ("string", "", "empty"),
        ("string", "__HIVE_DEFAULT_PARTITION__", "null partition value"),
        ("string", "../../etc", "escape"),
        ("string", "a/b", "escape"),
        ("string", "a\\b", "escape"),
        ("string", "a\nb", "escape"),
    ],
)
def test_partition_values_are_checked_against_their_type(key_type, value, problem):
    error = hive.partition_value_error("k", value, key_type)
    assert (error is None) if problem is None else (problem in error)


def test_refused_folders_are_named_and_never_fingerprinted(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=50)
    table = tmp_path / "lake"
    for name in REFUSED:
        shutil.copytree(table / "day=2026-11-01", table / name)
    records = hive.partition_records(load_config(config_path).lake)
    usable, refused = split_refused(records)
    assert [record.name for record in usable] == ["day=2026-11-01"]
    assert {failure.partition for failure in refused} == set(REFUSED)
    for failure in refused:
        assert failure.partition in failure.error and "(rule: partition key)" in failure.error
        assert REFUSED[failure.partition] in failure.error
    assert all(record.fingerprint is None and record.refused for record in records if record.name in REFUSED)


@pytest.mark.usefixtures("prefect_harness")
def test_refused_partitions_fail_alone_and_the_others_run(tmp_path):
    config_path = write_lake_config(tmp_path, days=2, rows_per_day=300, max_steps=50)
    table = tmp_path / "lake"
    for name in ("day=notadate", "day=..%2F..%2Fescape", "day=__HIVE_DEFAULT_PARTITION__"):
        shutil.copytree(table / "day=2026-11-01", table / name)
    with pytest.raises(PartitionFailures) as raised:
        lake_pipeline(str(config_path))
    summary = raised.value.summary
    assert sorted(failure.partition for failure in summary.failed) == [
        "day=..%2F..%2Fescape",
        "day=__HIVE_DEFAULT_PARTITION__",
        "day=notadate",
    ]
    assert sorted(partition.partition for partition in summary.partitions) == ["day=2026-11-01", "day=2026-11-02"]
    config = load_config(config_path)
    assert set(Ledger(config.output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-02"}
    # The key stays a date for the whole output table, and nothing was written outside it.
    scored = pl.scan_parquet(config.output.scored_uri, hive_partitioning=True).collect()
    assert scored.schema["day"] == pl.Date and scored.height == summary.totals["rows_scored"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.yaml", "lake", "out"]
    assert not (tmp_path / "out" / "scored" / "day=notadate").exists()
