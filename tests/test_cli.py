"""End to end through the `sae-pipeline` command line, as a user runs it (a separate process; the first run starts
its embedded Prefect as on a user's machine, the others share one server to save its start)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import pytest

from sae_pipeline.config import load_config
from sae_pipeline.registry import load_model
from sae_pipeline.runs import RunSummary
from sae_pipeline.schema import scored_output_schema
from tests.conftest import run_cli, start_cli

pytestmark = pytest.mark.slow


def test_cli_run_then_score_end_to_end(lake_config, tmp_path):
    """On the session's shared server: runs on their own embedded one are tests/test_embedded_server.py's."""
    result = run_cli("run", "--config", str(lake_config))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "AUC-ROC" in result.stdout and "day=2026-11-03" in result.stdout

    config = load_config(lake_config)
    runs = sorted(Path(config.output.runs_uri).glob("*.json"))
    summary = RunSummary.model_validate_json(runs[-1].read_text())
    scored = pl.scan_parquet(config.output.scored_uri, hive_partitioning=True, hive_schema={"day": pl.Date}).collect()
    quarantined = ds.dataset(config.output.quarantine_uri, partitioning="hive").count_rows()
    assert scored.height + quarantined == summary.totals["rows_in"] == 1800
    scored_output_schema(config).validate(scored.drop("day"))
    assert ds.dataset(config.output.scored_uri, partitioning="hive").count_rows() == scored.height

    model_folder = Path(summary.model_uri)
    assert sorted(path.name for path in model_folder.iterdir()) == ["model.json", "model.safetensors", "replay.parquet"]
    assert json.loads((model_folder / "model.json").read_text())["pipeline"]["model_version"] == summary.model_version
    assert load_model(summary.model_uri).detector.threshold_ > 0

    rescored = run_cli("score", "--config", str(lake_config), "--model", summary.model_version, "--backfill")
    assert rescored.returncode == 0, rescored.stderr
    assert pl.scan_parquet(config.output.scored_uri, hive_partitioning=True).collect().height == scored.height

    again = run_cli("run", "--config", str(lake_config))
    assert again.returncode == 0, again.stderr
    assert "no training" in again.stdout and "3 up to date" in again.stdout
    models = run_cli("models", "list", "--config", str(lake_config))
    assert models.returncode == 0 and "champion" in models.stdout and summary.model_version in models.stdout


def test_two_runs_started_at_once_never_interleave(lake_config, tmp_path):
    runs = [start_cli("run", "--config", str(lake_config), "--no-progress") for _ in range(2)]
    outcomes = sorted((run.wait(timeout=300), run.stderr.read()) for run in runs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "another run holds the output folder" in outcomes[1][1]
    assert len([path for path in Path(load_config(lake_config).output.models_uri).iterdir() if path.is_dir()]) == 1


def test_cli_reports_config_errors_cleanly(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr and "Traceback" not in result.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: {uri: x}\ncolumns: []\noutput: {uri: y}\nmodle: {}\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 2 and "modle" in result.stderr


def test_cli_reports_unreadable_file_with_its_path(lake_config, tmp_path):
    corrupt = tmp_path / "lake" / "day=2026-11-01" / "part-0.parquet"
    corrupt.write_bytes(b"not parquet at all")
    result = run_cli("run", "--config", str(lake_config), "--no-progress")
    assert result.returncode == 2
    assert str(corrupt) in result.stderr


def test_generate_sample_writes_partitions(tmp_path):
    result = run_cli("generate-sample", "--output", str(tmp_path / "lake"), "--days", "2", "--rows-per-day", "200")
    assert result.returncode == 0, result.stderr
    assert pl.scan_parquet(tmp_path / "lake", hive_partitioning=True).collect().height == 400


def test_generate_sample_writes_the_context_scenario_and_refuses_telemetry_options(tmp_path):
    result = run_cli("generate-sample", "--scenario", "context", "--output", str(tmp_path / "fleet"), "--days", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fleet" / "day=2026-11-01" / "part-0.parquet").exists()
    refused = run_cli(
        "generate-sample", "--scenario", "context", "--output", str(tmp_path / "x"), "--rows-per-day", "9"
    )
    assert refused.returncode == 2 and "--rows-per-day" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_failed_partitions_are_reported_from_the_run_summary_of_the_error():
    """`PartitionFailures.summary` is the run's `RunSummary`: the `error:` line names its first failed partition."""
    import argparse
    import datetime as dt

    from flows.cli import _error_lines
    from flows.lake_pipeline import PartitionFailures
    from sae_pipeline.records import FailedPartition

    now = dt.datetime.now(dt.UTC)
    failed = [FailedPartition(partition=f"day=2026-11-0{day}", error=f"bad\nfile {day}") for day in (1, 2)]
    summary = RunSummary(
        run_id="r",
        kind="score",
        config_name="c",
        started_at=now,
        finished_at=now,
        output_uri="/out",
        message="m",
        training=None,
        model_version=None,
        model_uri=None,
        unknown_columns=[],
        partitions=[],
        up_to_date=[],
        removed=[],
        failed=failed,
        drift_policy=None,
        totals={},
        evaluation=None,
    )
    message, hint = _error_lines(PartitionFailures("2 partition(s) failed", summary), argparse.Namespace())
    assert message == "day=2026-11-01: bad file 1 (and 1 more failed partition(s), listed above)"
    assert hint.startswith("the other partitions were committed")
