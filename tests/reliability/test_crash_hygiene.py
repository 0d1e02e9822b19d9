"""kill -9 of a real `sae-pipeline run` at several points, then a rerun: no row lost or duplicated, no staging
debris, no stale lease, no orphaned temporary Prefect server."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from sae_pipeline.config import load_config
from sae_pipeline.ledger import Ledger
from tests.conftest import run_cli, start_cli, write_lake_config
from tests.reliability.conftest import alive, descendants

pytestmark = pytest.mark.slow


def _kill_when(process, ready, timeout: float = 180) -> set[int]:
    """SIGKILL the CLI once `ready()` holds; return the processes it had started."""
    deadline = time.monotonic() + timeout
    children: set[int] = set()
    while process.poll() is None and time.monotonic() < deadline and not ready():
        children |= descendants(process.pid)
        time.sleep(0.05)
    children |= descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return children


def _rows(folder: Path) -> int:
    return ds.dataset(folder, format="parquet").count_rows() if folder.exists() else 0


def test_kill_9_at_several_points_then_rerun_loses_nothing(tmp_path):
    config_path = write_lake_config(tmp_path, days=4, rows_per_day=2000, max_steps=200)
    raw = yaml.safe_load(config_path.read_text())
    raw["scoring"]["batch_rows"] = 250  # many batches, so a kill lands in the middle of a partition's writes
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    out = Path(config.output.uri)
    lake_rows = {
        folder.name: pq.read_metadata(folder / "part-0.parquet").num_rows for folder in (tmp_path / "lake").iterdir()
    }
    args = ("run", "--config", str(config_path), "--no-progress")

    points = {
        "server started": lambda: bool(descendants(process.pid)),
        "model trained": lambda: (out / "models").exists() and any((out / "models").glob("*/model.safetensors")),
        "first partition scored": lambda: (out / "scored").exists() and any((out / "scored").glob("*/part-0.parquet")),
    }
    for point, ready in points.items():
        process = start_cli(*args, embedded=True)
        children = _kill_when(process, ready)
        assert process.returncode == -signal.SIGKILL and children, point
        time.sleep(1.0)
        orphans = [pid for pid in children if alive(pid)]
        assert not orphans, f"{point}: orphaned processes {orphans}"

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "another run holds" not in rerun.stderr
    entries = Ledger(config.output.ledger_uri).entries()
    assert set(entries) == set(lake_rows)
    for name, rows in lake_rows.items():
        scored, quarantined = _rows(out / "scored" / name), _rows(out / "quarantine" / name)
        assert scored + quarantined == rows == entries[name].rows_in, name
        assert scored == entries[name].rows_scored
        assert len(list((out / "scored" / name).iterdir())) == 1  # one file, no second copy
    assert not list((out / "_staging").glob("*")) if (out / "_staging").exists() else True
    assert not (out / "_lease.json").exists()
