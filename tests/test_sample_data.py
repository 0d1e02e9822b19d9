"""Tests for the synthetic fleet-telemetry lake: layout, schema, determinism and the injected ground truth."""

import datetime
import hashlib
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import pytest

from sae_pipeline.sample_data import SCHEMA, generate_day, generate_sample_lake

DAY = datetime.date(2026, 11, 1)
NOT_NULL = [
    "host_id",
    "region",
    "service",
    "hour",
    "cpu_pct",
    "mem_pct",
    "requests_per_s",
    "latency_ms",
    "error_rate",
    "net_in_mbps",
    "net_out_mbps",
]
FLOATS = [name for name, dtype in SCHEMA.items() if dtype == pl.Float64]


def _passes_validator() -> pl.Expr:
    """The validator's rules as one boolean expression; a null in a nullable column passes."""

    def between(name: str, low: float, high: float) -> pl.Expr:
        return pl.col(name).is_between(low, high).fill_null(True)

    rules = [pl.col(name).is_not_null() for name in NOT_NULL]
    rules += [pl.col(name).is_finite().fill_null(True) for name in FLOATS]
    rules += [between("cpu_pct", 0, 100), between("mem_pct", 0, 100), between("error_rate", 0, 1)]
    rules += [between("temperature_c", -20, 120)]
    rules += [
        (pl.col(name) >= 0).fill_null(True)
        for name in ["requests_per_s", "latency_ms", "net_in_mbps", "net_out_mbps", "disk_io_mbps"]
    ]
    return pl.all_horizontal(rules)


def _batch_share(frame: pl.DataFrame) -> float:
    return (frame["service"] == "batch").mean()


@pytest.fixture(scope="module")
def full_day() -> pl.DataFrame:
    return generate_day(DAY, rows=2000, seed=7)


def test_generate_day_is_deterministic_and_seed_dependent():
    first = generate_day(DAY, rows=500, seed=1)
    assert first.equals(generate_day(DAY, rows=500, seed=1))
    assert not first.equals(generate_day(DAY, rows=500, seed=2))
    assert not first.equals(generate_day(DAY + datetime.timedelta(days=1), rows=500, seed=1))


def test_lake_files_are_byte_identical_across_runs(tmp_path):
    first = generate_sample_lake(tmp_path / "a", days=2, rows_per_day=500, seed=3)
    second = generate_sample_lake(tmp_path / "b", days=2, rows_per_day=500, seed=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_lake_overwrites_existing_partitions(tmp_path):
    generate_sample_lake(tmp_path, days=1, rows_per_day=500, seed=1)
    paths = generate_sample_lake(tmp_path, days=1, rows_per_day=300, seed=1)
    assert pl.read_parquet(paths[0]).height == 300


def test_schema_is_exact(full_day):
    assert full_day.schema == pl.Schema(SCHEMA)
    assert full_day["event_time"].is_sorted()
    assert full_day["event_time"].dt.date().unique().to_list() == [DAY]
    assert (full_day["event_time"].dt.hour().cast(pl.Int32) == full_day["hour"]).all()


def test_hive_layout_is_readable_by_polars_and_pyarrow(tmp_path):
    paths = generate_sample_lake(tmp_path, days=3, rows_per_day=500, seed=0, start=DAY)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "day=2026-11-01/part-0.parquet",
        "day=2026-11-02/part-0.parquet",
        "day=2026-11-03/part-0.parquet",
    ]
    assert "day" not in pl.read_parquet(paths[0]).columns

    lake = pl.scan_parquet(tmp_path, hive_partitioning=True, hive_schema={"day": pl.Date}).collect()
    assert lake.height == 1500
    assert lake.schema == pl.Schema({**SCHEMA, "day": pl.Date})
    assert lake.group_by("day").len().sort("day")["len"].to_list() == [500, 500, 500]

    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 1500
    assert table.column_names == [*SCHEMA, "day"]


def test_anomalies_are_present_and_spread(full_day):
    labelled = full_day.filter("label_is_anomaly")
    assert 0.02 <= labelled.height / full_day.height <= 0.05
    counts = dict(labelled.group_by("anomaly_kind").len().iter_rows())
    assert set(counts) == {"spike", "broken_correlation", "rare_category", "invalid"}
    assert all(counts[kind] >= 15 for kind in ["spike", "broken_correlation", "rare_category"])
    assert 5 <= counts["invalid"] <= 10
    assert full_day.filter(pl.col("anomaly_kind").is_null())["label_is_anomaly"].not_().all()
    assert labelled["hour"].n_unique() >= 12


def test_rare_categories_never_appear_in_normal_rows(full_day):
    normal = full_day.filter(~pl.col("label_is_anomaly"))
    rare = full_day.filter(pl.col("anomaly_kind") == "rare_category")
    assert set(normal["region"]) == {"eu-west", "us-east", "us-west", "ap-south"}
    assert set(normal["service"]) == {"api", "web", "batch", "db"}
    unseen = ~pl.col("region").is_in(normal["region"].unique()) | ~pl.col("service").is_in(normal["service"].unique())
    assert rare.select(unseen.all()).item()


def test_only_invalid_rows_break_validator_rules(full_day):
    checked = full_day.with_columns(valid=_passes_validator())
    is_invalid = pl.col("anomaly_kind").fill_null("") == "invalid"
    assert checked.filter(~is_invalid)["valid"].all()
    assert not checked.filter(is_invalid)["valid"].any()


def test_normal_rows_have_sensor_gaps_and_correlated_load(full_day):
    normal = full_day.filter(~pl.col("label_is_anomaly"))
    assert 0.01 <= normal["disk_io_mbps"].null_count() / normal.height <= 0.06
    assert 0.005 <= normal["temperature_c"].null_count() / normal.height <= 0.04
    assert normal.select(pl.corr("cpu_pct", "requests_per_s")).item() > 0.6


def test_drifted_days_have_more_load_and_batch_traffic():
    normal = generate_day(DAY, rows=2000, seed=5)
    drifted = generate_day(DAY, rows=2000, seed=5, drifted=True)
    assert drifted["requests_per_s"].mean() > 1.1 * normal["requests_per_s"].mean()
    assert _batch_share(drifted) > 1.6 * _batch_share(normal)


def test_lake_drifts_only_the_last_days(tmp_path):
    generate_sample_lake(tmp_path, days=4, rows_per_day=1000, seed=0, drift_days=1)
    lake = pl.scan_parquet(tmp_path, hive_partitioning=True, hive_schema={"day": pl.Date}).collect()
    means = lake.group_by("day").agg(pl.col("requests_per_s").mean()).sort("day")["requests_per_s"].to_list()
    assert means[-1] > 1.1 * max(means[:-1])


def test_committed_sample_lake_matches_the_generator(tmp_path):
    """sample_data/telemetry is exactly what `sae-pipeline generate-sample` writes, so it can be regenerated."""
    committed = Path(__file__).resolve().parents[1] / "sample_data" / "telemetry"
    generate_sample_lake(tmp_path)
    written = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.parquet"))
    assert written == sorted(path.relative_to(committed) for path in committed.rglob("*.parquet"))
    for relative in written:
        assert (tmp_path / relative).read_bytes() == (committed / relative).read_bytes(), relative


#: SHA-256 over (relative path, bytes) of every file the default `generate_sample_lake` writes, taken before the
#: context scenario was added: new scenarios must leave the telemetry lake byte-identical.
DEFAULT_LAKE_SHA256 = "9b95189d7190d59fd43dac0cab548b3db350f12324e30306708457cdee2ea376"


def test_default_sample_lake_is_pinned(tmp_path):
    digest = hashlib.sha256()
    for path in generate_sample_lake(tmp_path):
        digest.update(path.relative_to(tmp_path).as_posix().encode())
        digest.update(path.read_bytes())
    assert digest.hexdigest() == DEFAULT_LAKE_SHA256
