"""Recurring runs over a growing lake, through the real flow (Prefect test harness): only new work, no duplicate
models, updates from the champion, changed / deleted / failing partitions, exclusive runs, schema changes."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.lake_pipeline import PartitionFailures, lake_pipeline, score_flow, train_or_update_flow
from sae_pipeline.config import load_config
from sae_pipeline.lease import LeaseHeldError
from sae_pipeline.ledger import Ledger
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.runs import RunSummary
from sae_pipeline.sample_data import generate_day
from sae_pipeline.updating import ModelSchemaError
from tests.conftest import write_lake_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _run(config_path: Path, **options) -> RunSummary:
    return RunSummary.model_validate(lake_pipeline(str(config_path), **options))


def _edit_config(config_path: Path, **sections) -> None:
    raw = yaml.safe_load(config_path.read_text())
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    config_path.write_text(yaml.safe_dump(raw))


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def _add_day(config_path: Path, day: str, rows: int = 600) -> None:
    folder = Path(load_config(config_path).lake.uri) / f"day={day}"
    folder.mkdir()
    generate_day(dt.date.fromisoformat(day), rows, seed=0).write_parquet(folder / "part-0.parquet")


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return write_lake_config(tmp_path, max_steps=100)


def test_second_identical_run_trains_nothing_and_writes_nothing(lake):
    first = _run(lake)
    output = Path(load_config(lake).output.uri)
    before = _mtimes(output)

    second = _run(lake)
    assert first.training.action == "train" and first.training.promoted
    assert second.training.action == "skip"
    assert second.partitions == [] and len(second.up_to_date) == 3
    assert "3 up to date" in second.message and "nothing written" in second.message
    assert _mtimes(output) == before  # not even a run summary: the run did nothing
    assert second.did_nothing and not first.did_nothing
    assert [info.version for info in ModelRegistry(str(output / "models")).versions()] == [first.training.model_version]


def test_changed_partition_is_the_only_one_rescored_and_the_model_is_updated(lake):
    first = _run(lake)
    changed = Path(load_config(lake).lake.uri) / "day=2026-11-02" / "part-0.parquet"
    pl.read_parquet(changed).head(500).write_parquet(changed)

    second = _run(lake)
    assert [(p.partition, p.reason) for p in second.partitions] == [("day=2026-11-02", "changed")]
    assert second.totals["rows_in"] == 500
    assert second.training.action == "update"
    assert second.training.parent_version == first.training.model_version
    entry = Ledger(load_config(lake).output.ledger_uri).entries()["day=2026-11-02"]
    assert entry.run_id == second.run_id and entry.reason == "changed" and entry.rows_in == 500


def test_new_partition_updates_the_champion_with_replay(lake):
    first = _run(lake)
    _add_day(lake, "2026-11-04")
    second = _run(lake)
    registry = ModelRegistry(load_config(lake).output.models_uri)
    updated = registry.load(second.training.model_version)
    assert updated.metadata.training_kind == "update"
    assert updated.metadata.parent_version == first.training.model_version
    assert "day=2026-11-04" in updated.metadata.data_fingerprints and len(updated.metadata.data_fingerprints) == 4
    assert updated.replay is not None and updated.replay.height > 0
    assert second.training.trained_on == ["day=2026-11-04"]
    assert [p.partition for p in second.partitions] == ["day=2026-11-04"]
    decision = second.training
    assert decision.champion_metrics is not None and "trimmed_mean_score" in decision.challenger_metrics
    assert registry.champion() == (decision.model_version if decision.promoted else first.training.model_version)


def test_manual_promotion_policy_keeps_the_champion_and_rollback_does_not_retrain(lake):
    first = _run(lake)
    _edit_config(lake, registry={"promotion": {"policy": "manual"}})
    _add_day(lake, "2026-11-04")
    second = _run(lake)
    registry = ModelRegistry(load_config(lake).output.models_uri)
    assert not second.training.promoted and registry.champion() == first.training.model_version
    assert all(p.model_version == first.training.model_version for p in second.partitions)

    registry.promote(second.training.model_version, reason="test")
    registry.rollback(reason="test")
    third = _run(lake)
    assert third.training.action == "skip" and third.partitions == []


def test_deleted_partition_loses_its_outputs(lake):
    _run(lake)
    config = load_config(lake)
    shutil.rmtree(Path(config.lake.uri) / "day=2026-11-03")
    summary = _run(lake)
    assert summary.removed == ["day=2026-11-03"] and summary.partitions == []
    for table in (config.output.scored_uri, config.output.quarantine_uri, config.output.drift_uri):
        assert not (Path(table) / "day=2026-11-03").exists()
    assert "day=2026-11-03" not in Ledger(config.output.ledger_uri).entries()
    assert 'href="day=2026-11-03/' not in (Path(config.output.drift_uri) / "anomalies.html").read_text()


def test_a_failing_partition_does_not_stop_the_others_and_is_retried(lake):
    bad = Path(load_config(lake).lake.uri) / "day=2026-11-02" / "part-0.parquet"
    good = pl.read_parquet(bad)
    good.drop("cpu_pct").write_parquet(bad)
    with pytest.raises(PartitionFailures, match=r"day=2026-11-02.*cpu_pct") as failure:
        lake_pipeline(str(lake))
    summary = RunSummary.model_validate(failure.value.summary)
    assert [p.partition for p in summary.partitions] == ["day=2026-11-01", "day=2026-11-03"]
    assert [f.partition for f in summary.failed] == ["day=2026-11-02"]
    assert [f.partition for f in summary.training.skipped_partitions] == ["day=2026-11-02"]
    assert set(Ledger(load_config(lake).output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-03"}

    good.write_parquet(bad)
    retried = _run(lake)
    assert [(p.partition, p.reason) for p in retried.partitions] == [("day=2026-11-02", "new")]
    assert retried.training.action == "update" and retried.training.trained_on == ["day=2026-11-02"]


def test_a_run_never_interleaves_with_another(lake):
    config = load_config(lake)
    lease = Path(config.output.lease_uri)
    lease.parent.mkdir(parents=True)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    lease.write_text(
        json.dumps({"token": "t", "run_id": "other-run", "host": "worker-2", "pid": 1, "expires_at": expires})
    )
    with pytest.raises(LeaseHeldError, match="other-run.*worker-2"):
        lake_pipeline(str(lake))
    assert not Path(config.output.scored_uri).exists()
    lease.unlink()
    _run(lake)


def test_partition_selection_backfill_and_rescore(lake):
    first = _run(lake)
    requested = RunSummary.model_validate(score_flow(str(lake), partitions=["day=2026-11-01..day=2026-11-02"]))
    assert [(p.partition, p.reason) for p in requested.partitions] == [
        ("day=2026-11-01", "requested"),
        ("day=2026-11-02", "requested"),
    ]
    assert requested.up_to_date == ["day=2026-11-03"] and requested.training is None
    backfill = RunSummary.model_validate(score_flow(str(lake), backfill=True))
    assert len(backfill.partitions) == 3

    retrained = RunSummary.model_validate(train_or_update_flow(str(lake), retrain=True))
    new_version = retrained.training.model_version
    assert retrained.training.action == "train" and retrained.partitions == []
    rescored = RunSummary.model_validate(score_flow(str(lake), rescore_with=new_version))
    assert {p.model_version for p in rescored.partitions} == {new_version} and len(rescored.partitions) == 3
    again = RunSummary.model_validate(score_flow(str(lake), rescore_with=new_version))
    assert again.partitions == [] and first.training.model_version != new_version


def test_schema_change_refuses_the_champion_until_retrained(lake):
    _run(lake)
    raw = yaml.safe_load(lake.read_text())
    raw["columns"] = [c for c in raw["columns"] if c["name"] != "mem_pct"]
    lake.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelSchemaError, match="mem_pct.*--retrain"):
        lake_pipeline(str(lake), mode="score")
    summary = _run(lake, retrain=True)
    assert summary.training.action == "train" and summary.training.promoted


def test_retention_keeps_the_newest_and_the_aliased_versions(lake):
    _edit_config(lake, registry={"keep_versions": 1, "promotion": {"policy": "manual"}})
    with pytest.raises(Exception, match="no champion"):
        _run(lake)
    registry = ModelRegistry(load_config(lake).output.models_uri)
    first = registry.versions()[0].version
    registry.promote(first, reason="test")
    for day in ("2026-11-04", "2026-11-05"):
        _add_day(lake, day)
        _run(lake)
    kept = [info.version for info in registry.versions()]
    assert len(kept) == 2 and first in kept


def test_columns_the_config_does_not_name_are_reported_and_left_out(lake):
    extra = Path(load_config(lake).lake.uri) / "day=2026-11-02" / "part-0.parquet"
    pl.read_parquet(extra).with_columns(pl.lit("spark-job-7").alias("ingest_batch")).write_parquet(extra)
    summary = _run(lake)
    by_name = {p.partition: p for p in summary.partitions}
    assert by_name["day=2026-11-02"].ignored_columns == ["ingest_batch"]
    assert by_name["day=2026-11-01"].ignored_columns == []
    scored = pl.scan_parquet(load_config(lake).output.scored_uri, hive_partitioning=True).collect()
    assert "ingest_batch" not in scored.columns and scored.height == summary.totals["rows_scored"]
