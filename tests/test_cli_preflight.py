"""What the command line answers before it starts Prefect: mistakes named in CLI terms, and runs with nothing to do
that stop at once. Real `sae-pipeline` subprocesses on small generated lakes."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.cli import _compact_selection
from sae_pipeline.config import load_config
from tests.conftest import run_cli, start_cli, write_lake_config
from tests.reliability.conftest import error_lines

pytestmark = pytest.mark.slow

SERVER_LINE = "starting the embedded Prefect server"


def _one_error(result, returncode: int = 2) -> str:
    lines = error_lines(result.stderr)
    assert result.returncode == returncode, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert SERVER_LINE not in result.stdout and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A lake of three days, run once (so a rerun has nothing to do)."""
    root = tmp_path_factory.mktemp("trained")
    config_path = write_lake_config(root, days=3, rows_per_day=200, max_steps=30)
    first = run_cli("run", "--config", str(config_path))
    assert first.returncode == 0, first.stderr
    return config_path


def test_a_config_typo_names_the_column_and_the_nearest_key(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=20)
    config = yaml.safe_load(config_path.read_text())
    config["columns"][3]["nulable"] = True
    config_path.write_text(yaml.safe_dump(config))
    error = _one_error(run_cli("run", "--config", str(config_path), embedded=True))
    assert f"(column {config['columns'][3]['name']!r})" in error
    assert "unknown key 'nulable' (did you mean 'nullable'?)" in error
    assert "pydantic" not in error and "http" not in error
    assert not (tmp_path / "out").exists()


def test_a_wrong_lake_uri_fails_before_anything_is_written(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=20)
    config_path.write_text(config_path.read_text().replace(str(tmp_path / "lake"), str(tmp_path / "lakes")))
    error = _one_error(run_cli("run", "--config", str(config_path), embedded=True))
    assert str(tmp_path / "lakes") in error
    assert not (tmp_path / "out").exists()


def test_missing_partition_keys_suggest_the_keys_the_lake_has(tmp_path):
    config_path = write_lake_config(tmp_path, days=2, rows_per_day=20)
    for folder in (tmp_path / "lake").iterdir():
        folder.rename(folder.with_name(folder.name.replace("day=", "date=")))
    config = yaml.safe_load(config_path.read_text())
    del config["lake"]["partition_keys"]  # the default expects day=... folders
    config_path.write_text(yaml.safe_dump(config))
    error = _one_error(run_cli("run", "--config", str(config_path), embedded=True))
    assert "folders named day=..." in error and "set lake.partition_keys to {date: date}" in error


def test_a_bad_partition_selection_is_named_in_command_line_terms(trained):
    error = _one_error(run_cli("score", "--config", str(trained), "--partitions", "2026-11-01", embedded=True))
    assert error.startswith("error: --partitions: partition '2026-11-01' is not in the lake")
    assert "e.g. day=2026-11-01" in error and "should match pattern" not in error


def test_a_column_type_wrong_in_every_partition_is_reported_once(tmp_path):
    config_path = write_lake_config(tmp_path, days=3, rows_per_day=50)
    config = yaml.safe_load(config_path.read_text())
    column = next(spec for spec in config["columns"] if spec["name"] == "latency_ms")
    column["type"] = "int"
    config_path.write_text(yaml.safe_dump(config))
    error = _one_error(run_cli("run", "--config", str(config_path), embedded=True))
    assert error.count("latency_ms") == 1 and "expected int (rule: column type)" in error
    assert "in every partition checked (3 of 3" in error


def test_a_run_with_nothing_to_do_starts_no_server_and_writes_nothing(trained):
    config = load_config(trained)
    runs_before = sorted(Path(config.output.uri, "runs").iterdir())
    result = run_cli("run", "--config", str(trained), embedded=True)
    assert result.returncode == 0, result.stderr
    assert SERVER_LINE not in result.stdout
    assert "nothing to do: no training" in result.stdout and "3 up to date" in result.stdout
    assert "nothing written" in result.stdout and "no flow run started" in result.stdout
    assert sorted(Path(config.output.uri, "runs").iterdir()) == runs_before


def test_score_without_a_model_fails_before_prefect(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=20)
    result = run_cli("score", "--config", str(config_path), embedded=True)
    assert result.returncode == 2 and SERVER_LINE not in result.stdout
    assert "no champion" in result.stderr and not (tmp_path / "out" / "_lease.json").exists()


def _copy_of(trained: Path, folder: Path) -> Path:
    """The trained lake and its outputs copied (file times kept, so fingerprints match), with their config."""
    shutil.copytree(trained.parent / "lake", folder / "lake")
    shutil.copytree(trained.parent / "out", folder / "out")
    config_path = folder / "config.yaml"
    config_path.write_text(trained.read_text().replace(str(trained.parent), str(folder)))
    return config_path


def test_a_partition_left_to_score_is_not_a_no_op(trained, tmp_path):
    config_path = _copy_of(trained, tmp_path)
    newest = sorted((tmp_path / "lake").iterdir())[-1] / "part-0.parquet"
    pl.read_parquet(newest).head(100).write_parquet(newest)
    result = run_cli("score", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    assert "1 partition(s) scored, 2 up to date" in result.stdout


def test_an_interrupted_backfill_says_how_to_finish(trained, tmp_path):
    config_path = _copy_of(trained, tmp_path)
    process = start_cli("score", "--config", str(config_path), "--backfill", "--no-progress", embedded=True)
    assert SERVER_LINE in process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    finish = f"sae-pipeline score --config {config_path} --partitions day=2026-11-01..day=2026-11-03"
    assert error_lines(stderr) == [f"error: interrupted; 0 of 3 requested partition(s) committed; to finish: {finish}"]
    finished = run_cli(*finish.split()[1:])
    assert finished.returncode == 0, finished.stderr
    assert "3 partition(s) scored" in finished.stdout


def test_compact_selection_turns_neighbours_into_ranges():
    order = [f"day=2026-11-0{day}" for day in range(1, 8)]
    chosen = ["day=2026-11-05", "day=2026-11-01", "day=2026-11-02", "day=2026-11-03", "day=2026-11-07"]
    assert _compact_selection(chosen, order) == "day=2026-11-01..day=2026-11-03,day=2026-11-05,day=2026-11-07"
