"""End to end through the `sae-pipeline` command line, as a user runs it (separate process, embedded Prefect)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds

from sae_pipeline.config import load_config
from sae_pipeline.registry import load_model
from sae_pipeline.runs import RunSummary
from sae_pipeline.schema import scored_output_schema


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "sae_pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_run_then_score_end_to_end(lake_config, tmp_path):
    result = run_cli("run", "--config", str(lake_config), home=tmp_path)
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
    assert sorted(path.name for path in model_folder.iterdir()) == ["model.json", "model.safetensors"]
    assert json.loads((model_folder / "model.json").read_text())["pipeline"]["model_version"] == summary.model_version
    assert load_model(summary.model_uri).detector.threshold_ > 0

    rescored = run_cli("score", "--config", str(lake_config), "--model", summary.model_uri, home=tmp_path)
    assert rescored.returncode == 0, rescored.stderr
    assert pl.scan_parquet(config.output.scored_uri, hive_partitioning=True).collect().height == scored.height


def test_cli_reports_config_errors_cleanly(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "missing.yaml"), home=tmp_path)
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr and "Traceback" not in result.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: {uri: x}\ncolumns: []\noutput: {uri: y}\nmodle: {}\n")
    result = run_cli("run", "--config", str(bad), home=tmp_path)
    assert result.returncode == 2 and "modle" in result.stderr


def test_cli_reports_unreadable_file_with_its_path(lake_config, tmp_path):
    corrupt = tmp_path / "lake" / "day=2026-11-01" / "part-0.parquet"
    corrupt.write_bytes(b"not parquet at all")
    result = run_cli("run", "--config", str(lake_config), "--no-progress", home=tmp_path)
    assert result.returncode == 2
    assert str(corrupt) in result.stderr


def test_generate_sample_writes_partitions(tmp_path):
    result = run_cli("generate-sample", "--output", str(tmp_path / "lake"), "--days", "2", "--rows-per-day", "200", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pl.scan_parquet(tmp_path / "lake", hive_partitioning=True).collect().height == 400
