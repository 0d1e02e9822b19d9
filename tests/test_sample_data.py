"""Tests for the synthetic lakes (telemetry and the context scenario): layout, schema, determinism, ground truth."""

import datetime
import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.dataset as ds
import pytest

from sae_pipeline.config import load_config
from sae_pipeline.sample_data import (
    CONTEXT_ANOMALY_KINDS,
    CONTEXT_CADENCE_MINUTES,
    CONTEXT_HOSTS,
    CONTEXT_SCHEMA,
    SCHEMA,
    generate_context_day,
    generate_context_lake,
    generate_day,
    generate_sample_lake,
)

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


# The context scenario: a fleet over time whose anomalies are only anomalous in context.

CONTEXT_READINGS_PER_DAY = CONTEXT_HOSTS * 24 * 60 // CONTEXT_CADENCE_MINUTES


@pytest.fixture(scope="module")
def context_lake(tmp_path_factory) -> tuple[list[Path], pl.DataFrame]:
    """The default context lake (10 days) and its rows with their `day`."""
    root = tmp_path_factory.mktemp("context")
    paths = generate_context_lake(root)
    return paths, pl.scan_parquet(root, hive_partitioning=True, hive_schema={"day": pl.Date}).collect()


@pytest.fixture(scope="module")
def host_normals(context_lake) -> pl.DataFrame:
    """Each host's mean and spread of memory and requests over its normal rows, by day and night."""
    normal = context_lake[1].filter(~pl.col("label_is_anomaly"))
    night = pl.col("event_time").dt.hour() < 5
    return normal.group_by("host_id").agg(
        mem_mean=pl.col("mem_pct").mean(),
        mem_std=pl.col("mem_pct").std(),
        night_requests_max=pl.col("requests_per_s").filter(night).max(),
        day_requests_max=pl.col("requests_per_s").max(),
    )


def _incidents(lake: pl.DataFrame) -> pl.DataFrame:
    """One row per incident: a run of labelled readings of one host on one day (10 minutes apart)."""
    labelled = lake.filter("label_is_anomaly").sort("host_id", "event_time")
    new_run = pl.col("event_time").diff().over("host_id", "day") != pl.duration(minutes=CONTEXT_CADENCE_MINUTES)
    return (
        labelled.with_columns(run=new_run.fill_null(True).cum_sum())
        .group_by("run")
        .agg(pl.col("day").first(), pl.col("anomaly_kind").unique(), rows=pl.len())
    )


def test_context_lake_is_deterministic_and_seed_dependent(tmp_path, context_lake):
    paths, _ = context_lake
    again = generate_context_lake(tmp_path)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    incidents = dict.fromkeys(CONTEXT_ANOMALY_KINDS, 1)
    assert not generate_context_day(DAY, 0, incidents).equals(generate_context_day(DAY, 1, incidents))


def test_context_lake_layout_schema_and_cadence(context_lake):
    paths, lake = context_lake
    assert [path.parent.name for path in paths] == [f"day=2026-11-{day:02d}" for day in range(1, 11)]
    assert lake.drop("day").schema == pl.Schema(CONTEXT_SCHEMA)
    assert lake.group_by("day").len()["len"].to_list() == [CONTEXT_READINGS_PER_DAY] * 10
    assert lake["host_id"].n_unique() == CONTEXT_HOSTS
    assert lake.sort("day")["event_time"].is_sorted()
    steps = lake.sort("host_id", "event_time").select(pl.col("event_time").diff().over("host_id").drop_nulls())
    assert steps.to_series().unique().to_list() == [dt.timedelta(minutes=CONTEXT_CADENCE_MINUTES)]


def test_context_anomalies_are_incidents_of_every_kind_after_the_training_week(context_lake):
    incidents = _incidents(context_lake[1])
    assert incidents["anomaly_kind"].list.len().max() == 1  # an incident has one kind
    assert incidents["rows"].is_between(3, 12).all()
    training = incidents.filter(pl.col("day") < dt.date(2026, 11, 8))
    assert training.group_by("day").len()["len"].max() == 1  # a small natural rate while training
    later = incidents.filter(pl.col("day") >= dt.date(2026, 11, 8)).explode("anomaly_kind")
    counts = dict(later.group_by("anomaly_kind").len().iter_rows())
    assert counts == dict.fromkeys(CONTEXT_ANOMALY_KINDS, 18)  # 6 of each kind on each of the last 3 days


def test_context_normal_rows_have_their_usual_nulls(context_lake):
    lake = context_lake[1]
    normal = lake.filter(~pl.col("label_is_anomaly"))
    rates = normal.select(pl.col("disk_io_mbps", "temperature_c", "agent_version").null_count() / normal.height)
    assert 0.02 <= rates["disk_io_mbps"].item() <= 0.04
    assert 0.01 <= rates["temperature_c"].item() <= 0.03
    assert 0.01 <= rates["agent_version"].item() <= 0.03
    assert lake.filter("label_is_anomaly").null_count().drop("anomaly_kind").sum_horizontal().item() == 0


def test_context_anomalies_are_normal_for_the_fleet_but_not_in_their_context(context_lake, host_normals):
    lake = context_lake[1].join(host_normals, on="host_id")
    normal = lake.filter(~pl.col("label_is_anomaly"))

    offset = lake.filter(pl.col("anomaly_kind") == "entity_offset")
    sigmas = ((offset["mem_pct"] - offset["mem_mean"]) / offset["mem_std"]).abs()
    assert sigmas.mean() >= 4.5
    assert offset["mem_pct"].is_between(normal["mem_pct"].min(), normal["mem_pct"].max()).all()

    wrong_hour = lake.filter(pl.col("anomaly_kind") == "wrong_hour")
    assert (wrong_hour["event_time"].dt.hour() < 5).all()
    assert (wrong_hour["requests_per_s"] > wrong_hour["night_requests_max"]).mean() >= 0.9
    assert (wrong_hour["requests_per_s"] <= wrong_hour["day_requests_max"] * 1.05).all()

    fits = {
        host: np.polyfit(rows["requests_per_s"], rows["latency_ms"], 1) for (host,), rows in normal.group_by("host_id")
    }

    def latency_residuals(frame: pl.DataFrame) -> np.ndarray:
        """Latency minus what the host's normal rows predict from its request rate."""
        return np.array(
            [
                lat - np.polyval(fits[host], req)
                for host, req, lat in frame.select("host_id", "requests_per_s", "latency_ms").iter_rows()
            ]
        )

    usual = np.std(latency_residuals(normal.sample(5000, seed=0)))
    decoupled = lake.filter(pl.col("anomaly_kind") == "decoupled")
    assert np.median(np.abs(latency_residuals(decoupled))) > 5 * usual  # latency no longer follows requests

    # Some hosts always run hot: their usual CPU is far above the fleet's.
    cpu = normal.group_by("host_id").agg(pl.col("cpu_pct").median())["cpu_pct"]
    assert (cpu > cpu.median() + 2 * normal["cpu_pct"].std()).sum() >= 3


def test_fleet_config_describes_the_context_lake():
    config = load_config(Path(__file__).resolve().parents[1] / "sample_data" / "fleet.yaml")
    assert [column.name for column in config.columns] == list(CONTEXT_SCHEMA)
    assert config.context.entity == "host_id" and config.context.calendar == ["hour_of_day"]
    assert config.context.history.window == 36
    assert (config.label_column, config.label_kind_column) == ("label_is_anomaly", "anomaly_kind")
