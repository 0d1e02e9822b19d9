"""The embedded Prefect server of CLI runs on a slow machine: a start that takes too long is retried once, and one
that never comes up ends in one `error:` line with a `hint:` naming the setting; no server is left behind.

The slow start is real: a `sitecustomize` module on the server's path sleeps before the server's first start
(as a first database migration on a loaded machine does), and not before the second."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import run_cli, start_cli, write_lake_config
from tests.reliability.conftest import alive, descendants, error_lines

pytestmark = pytest.mark.slow

SLOW_FIRST_START = """
import os, sys, time
if "uvicorn" in sys.orig_argv and not os.path.exists({marker!r}):
    open({marker!r}, "w").close()
    time.sleep(300)
"""


def test_a_server_that_never_answers_in_time_ends_in_one_error_and_a_hint(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=50)
    result = run_cli(
        "run", "--config", str(config_path), embedded=True, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1"
    )
    error, hint = error_lines(result.stderr)
    assert result.returncode == 2
    assert error == "error: the embedded Prefect server did not start within 1 s, nor on a retry within 2 s"
    assert hint.startswith("hint: ") and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in hint
    assert "--verbose" in hint
    assert "starting the embedded Prefect server (up to 1 s" in result.stdout
    assert "retrying once, waiting up to 2 s" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_slow_first_start_is_retried_and_the_run_completes(tmp_path):
    # The retry is a full start (imports, database migrations) while the other test worker loads both cores: CI has
    # seen it take over 24 s, hence a first deadline of 30 s and a retry window of 60 s.
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=100, max_steps=20)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_FIRST_START.format(marker=str(tmp_path / "slowed-once")))
    result = run_cli(
        "run",
        "--config",
        str(config_path),
        embedded=True,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="30",
        PYTHONPATH=os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "slowed-once").exists()
    assert "did not answer within 30 s; retrying once, waiting up to 60 s" in result.stdout
    assert "1 partition(s) scored" in result.stdout


def test_ctrl_c_while_the_server_starts_exits_130_with_one_line(tmp_path):
    config_path = write_lake_config(tmp_path, days=1, rows_per_day=50)
    process = start_cli("run", "--config", str(config_path), "--no-progress", embedded=True)
    assert "starting the embedded Prefect server" in process.stdout.readline()
    deadline = time.monotonic() + 30
    while not descendants(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    children = descendants(process.pid)
    process.send_signal(2)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert error_lines(stderr) == ["error: interrupted; committed partitions are kept; the next run scores the rest"]
    time.sleep(1)
    assert not [pid for pid in children if alive(pid)]
