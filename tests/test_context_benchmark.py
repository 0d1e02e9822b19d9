"""The context benchmark lays SMD out as documented (benchmarks/context.py): train days, then test days."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl

from tests.conftest import benchmark_module

context = benchmark_module("context")


def write_smd(root: Path, machine: str, train_rows: int, test_rows: int) -> None:
    """A fake SMD machine with 3 metrics; its test labels mark rows 10-19."""
    rng = np.random.default_rng(len(machine) + train_rows)
    for folder, rows in (("train", train_rows), ("test", test_rows)):
        (root / "smd" / folder).mkdir(parents=True, exist_ok=True)
        with gzip.open(root / "smd" / folder / f"{machine}.txt.gz", "wt") as handle:
            np.savetxt(handle, rng.random((rows, 3)), delimiter=",")
    labels = np.zeros(test_rows, dtype=int)
    labels[10:20] = 1
    (root / "smd" / "test_label").mkdir(exist_ok=True)
    np.savetxt(root / "smd" / "test_label" / f"{machine}.txt", labels, fmt="%d")


def test_smd_fleet_lake_trains_on_train_days_and_keeps_test_rows_in_order(tmp_path):
    write_smd(tmp_path, "machine-a", train_rows=2000, test_rows=1500)
    write_smd(tmp_path, "machine-b", train_rows=3000, test_rows=1000)
    frames = [context.smd_frame(tmp_path, machine) for machine in ("machine-a", "machine-b")]

    lake = context.smd_lake(pl.concat(frames).sort("minute", "machine"), tmp_path / "lake")

    # 3000 minutes of training end at midnight (3 days, the first partial); 1500 test minutes span 2 days.
    assert lake.training == ["day=2025-12-29", "day=2025-12-30", "day=2025-12-31"]
    days = sorted(path.name for path in (tmp_path / "lake").iterdir())
    assert days == [*lake.training, "day=2026-01-01", "day=2026-01-02"]
    for day in days:
        labels = pl.read_parquet(tmp_path / "lake" / day / "part-0.parquet").get_column("label")
        assert labels.null_count() in (0, labels.len()), f"{day} mixes train and test rows"
    roles = {column["name"]: (column["role"], column.get("nullable", False)) for column in lake.columns}
    assert roles["machine"] == ("identifier", False) and roles["minute"] == ("timestamp", False)
    assert roles["label"] == ("label", True) and roles["m00"] == ("numeric", False)
    test = frames[0].filter(pl.col("label").is_not_null())
    assert test.height == 1500 and test.get_column("label").arg_true().to_list() == list(range(10, 20))
