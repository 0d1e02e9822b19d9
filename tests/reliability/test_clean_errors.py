"""One `error:` line (plus at most a `hint:`), exit 2, no Prefect logs or tracebacks unless `--verbose`; only
transient storage errors are retried. Real `sae-pipeline` subprocesses on small generated lakes."""

from __future__ import annotations

import errno
import signal
import time
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pytest

from sae_pipeline import storage
from sae_pipeline.config import load_config
from sae_pipeline.lease import LeaseHeldError
from sae_pipeline.registry import ModelRegistry, RegistryError
from sae_pipeline.schema import InputSchemaError
from tests.conftest import run_cli, start_cli, write_lake_config
from tests.reliability.conftest import alive, descendants, error_lines

pytestmark = pytest.mark.slow

PREFECT_NOISE = ("Traceback", "ERROR ", "INFO ", "WARNING ", "prefect.", "Finished in state", "temporary server")


def assert_clean(result, returncode: int = 2) -> list[str]:
    lines = error_lines(result.stderr)
    assert result.returncode == returncode, result.stderr
    assert lines and lines[0].startswith("error: ") and len(lines) <= 2, lines
    assert len(lines) == 1 or lines[1].startswith("hint: "), lines
    for noise in PREFECT_NOISE:
        assert noise not in result.stderr + result.stdout, noise
    return lines


def test_failures_inside_the_flow_print_one_line_naming_file_partition_column_and_rule(tmp_path):
    config_path = write_lake_config(tmp_path, days=2, rows_per_day=300, max_steps=50)
    broken = tmp_path / "lake" / "day=2026-11-02" / "part-0.parquet"
    pl.read_parquet(broken).drop("cpu_pct").write_parquet(broken)

    result = run_cli("run", "--config", str(config_path), "--no-progress")
    error, hint = assert_clean(result)
    assert "day=2026-11-02" in error and str(broken) in error and "cpu_pct" in error and "rule: column present" in error
    assert "committed" in hint
    assert "FAILED day=2026-11-02" in result.stdout and "day=2026-11-01" in result.stdout

    # --verbose shows what Prefect saw: its own log lines and the traceback.
    verbose = run_cli("run", "--config", str(config_path), "--no-progress", "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert any(line.startswith("error: day=2026-11-02") for line in error_lines(verbose.stderr))
    assert "ERROR prefect.flow_runs" in verbose.stderr

    # A corrupt champion fails before Prefect starts, naming the file.
    config = load_config(config_path)
    registry = ModelRegistry(config.output.models_uri)
    weights = Path(registry.uri(registry.resolve("champion"))) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = run_cli("score", "--config", str(config_path), "--backfill", "--no-progress", embedded=True)
    (error,) = assert_clean(result)
    assert str(weights) in error and "starting the embedded Prefect server" not in result.stdout


def test_score_without_a_champion_hints_to_train_first(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=50)
    error, hint = assert_clean(run_cli("score", "--config", str(config_path), "--no-progress"))
    assert "no champion" in error and hint == f"hint: train first: sae-pipeline train --config {config_path}"


def test_ctrl_c_exits_130_with_one_line_and_leaves_no_server(tmp_path):
    config_path = write_lake_config(tmp_path, days=2, rows_per_day=300, max_steps=3000)
    process = start_cli("run", "--config", str(config_path), "--no-progress", embedded=True)
    deadline = time.monotonic() + 120
    while not descendants(process.pid) and time.monotonic() < deadline:  # the temporary server has started
        time.sleep(0.2)
    time.sleep(4)  # the flow is running (training takes longer than this)
    children = descendants(process.pid)
    assert children
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert error_lines(stderr) == ["error: interrupted; committed partitions are kept; the next run scores the rest"]
    assert "Traceback" not in stdout + stderr
    time.sleep(1)
    assert not [pid for pid in children if alive(pid)]

    config_path.write_text(config_path.read_text().replace("max_steps: 3000", "max_steps: 50"))
    rerun = run_cli("run", "--config", str(config_path), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr


def _chain(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as cause:
            raise outer from cause
    except BaseException as error:
        return error


def test_only_transient_storage_errors_are_retried():
    try:
        pafs.LocalFileSystem().open_output_stream("/sys/kernel/not-writable")
    except OSError as error:
        forbidden = error
    assert isinstance(forbidden, PermissionError)
    permanent = [
        forbidden,
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.EACCES, "Permission denied"),
        _chain(storage.LakeReadError("cannot read x"), OSError(errno.ENOSPC, "No space left on device")),
        InputSchemaError("f.parquet: required column(s) missing: ['a'] (rule: column present)"),
        RegistryError("model.safetensors: corrupt"),
        ValueError("HTTP status 503 in a value"),  # bad data stays bad data whatever its text says
        LeaseHeldError("another run holds the output folder"),
        RuntimeError("unknown"),
    ]
    transient = [
        OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."),
        OSError(
            "When reading information for key 'k' in bucket 'b': AWS Error UNKNOWN (HTTP status 503) during HeadObject"
        ),
        OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7, Couldn't connect to server"),
        _chain(
            storage.LakeReadError("cannot read Parquet file p"),
            OSError("AWS Error UNKNOWN (HTTP status 500) during GetObject"),
        ),
        TimeoutError("timed out"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    ]
    assert [storage.is_transient(error) for error in permanent] == [False] * len(permanent)
    assert [storage.is_transient(error) for error in transient] == [True] * len(transient)
