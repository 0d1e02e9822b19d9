"""The run lease on the output folder: exclusive, released, taken over from dead or expired holders."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys

import pytest

from sae_pipeline.lease import LeaseHeldError, LeaseLostError, RunLease, confirm_holder


def _acquire_in_another_process(uri: str) -> subprocess.CompletedProcess:
    code = f"from sae_pipeline.lease import RunLease; RunLease({uri!r}, 'run-2', 60).acquire()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_second_holder_is_refused_with_the_holder_named(tmp_path):
    uri = str(tmp_path / "out" / "_lease.json")
    with RunLease(uri, "run-1", ttl_seconds=60):
        contender = _acquire_in_another_process(uri)
        assert contender.returncode != 0 and "LeaseHeldError" in contender.stderr and "run run-1" in contender.stderr
    assert not (tmp_path / "out" / "_lease.json").exists()
    assert _acquire_in_another_process(uri).returncode == 0


def test_lease_of_a_dead_process_on_this_machine_is_taken_over(tmp_path):
    uri = tmp_path / "_lease.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {
        "token": "x",
        "run_id": "crashed",
        "pid": int(dead.stdout),
        "host": socket.gethostname(),
        "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
    }
    uri.write_text(json.dumps(record))
    with RunLease(str(uri), "run-2", ttl_seconds=60):
        assert json.loads(uri.read_text())["run_id"] == "run-2"


def test_expired_or_torn_lease_is_taken_over(tmp_path):
    uri = tmp_path / "_lease.json"
    uri.write_text(
        json.dumps(
            {
                "token": "x",
                "run_id": "old",
                "pid": 1,
                "host": "elsewhere",
                "expires_at": (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat(),
            }
        )
    )
    with RunLease(str(uri), "run-2", ttl_seconds=60):
        pass
    uri.write_text("{not json")
    with RunLease(str(uri), "run-3", ttl_seconds=60):
        assert json.loads(uri.read_text())["run_id"] == "run-3"


def test_live_lease_of_another_machine_is_respected_until_it_expires(tmp_path):
    uri = tmp_path / "_lease.json"
    uri.write_text(
        json.dumps(
            {
                "token": "x",
                "run_id": "remote",
                "pid": 1,
                "host": "other-host",
                "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat(),
            }
        )
    )
    with pytest.raises(LeaseHeldError, match="other-host"):
        RunLease(str(uri), "run-2", ttl_seconds=60).acquire()
    assert json.loads(uri.read_text())["run_id"] == "remote"


def test_the_holding_process_may_enter_again_without_releasing_early(tmp_path):
    uri = tmp_path / "_lease.json"
    with RunLease(str(uri), "cli", ttl_seconds=60) as outer:
        with RunLease(str(uri), "flow", ttl_seconds=60) as inner:
            confirm_holder(str(uri), inner.token, "the flow's work")  # its tasks commit under the outer lease
        assert json.loads(uri.read_text())["run_id"] == "cli"
        confirm_holder(str(uri), outer.token, "the CLI's work")
    assert not uri.exists()


def test_work_of_a_run_that_lost_the_lease_is_refused_with_the_new_holder_named(tmp_path):
    uri = str(tmp_path / "_lease.json")
    old = RunLease(uri, "old", ttl_seconds=60)
    with pytest.raises(LeaseLostError, match=r"day=1: scored rows not committed: .*\(no run holds it now\)"):
        confirm_holder(uri, old.token, "day=1: scored rows")
    with RunLease(uri, "new", ttl_seconds=60), pytest.raises(LeaseLostError, match=r"\(run new holds it now\)"):
        confirm_holder(uri, old.token, "day=1: scored rows")
