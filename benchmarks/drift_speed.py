"""Drift statistics speed: a 2M-row x 32-column partition against a stored reference; prints JSON.

    .venv/bin/python benchmarks/drift_speed.py [--rows 2000000] [--columns 32] [--categorical 0] [--repeat 3]

Times `DriftAccumulator.update` (one 2M-row batch, and the same rows in 100k-row batches) plus `report()`.
The reference (200k rows, built once) and the generated partition are not timed. Best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline.config import DriftConfig  # noqa: E402
from sae_pipeline.drift import DriftAccumulator, build_reference  # noqa: E402


def make_frame(rows: int, n_numeric: int, n_categorical: int, seed: int, dtype: type, shift: float) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    columns = {}
    for i in range(n_numeric):
        kind = i % 4
        if kind == 0:
            values = rng.normal(shift, 1.0, rows)
        elif kind == 1:
            values = rng.lognormal(shift, 1.0, rows)
        elif kind == 2:
            values = rng.exponential(2.0 + shift, rows)
        else:
            values = np.round(rng.gamma(2.0, 10.0, rows) + shift, 1)  # ties: prices rounded to 0.1
        columns[f"x{i}"] = values.astype(dtype)
    for i in range(n_categorical):
        columns[f"c{i}"] = rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"], rows)
    return pl.DataFrame(columns)


def best_of(repeat: int, run) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--categorical", type=int, default=0, help="how many of the columns are strings")
    parser.add_argument("--float32", action="store_true", help="numeric columns as Float32 (cast costs included)")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    add_output_options(parser)
    args = parser.parse_args()
    n_numeric = args.columns - args.categorical
    dtype = np.float32 if args.float32 else np.float64
    reference_frame = make_frame(200_000, n_numeric, args.categorical, seed=0, dtype=dtype, shift=0.0)
    numeric = [f"x{i}" for i in range(n_numeric)]
    categorical = [f"c{i}" for i in range(args.categorical)]
    settings = DriftConfig()
    start = time.perf_counter()
    reference = build_reference(reference_frame, numeric, categorical, settings=settings)
    build_s = time.perf_counter() - start
    partition = make_frame(args.rows, n_numeric, args.categorical, seed=1, dtype=dtype, shift=0.05)

    def one_batch() -> None:
        DriftAccumulator(reference, settings).update(partition).report(partition="bench")

    def many_batches() -> None:
        accumulator = DriftAccumulator(reference, settings)
        for start in range(0, partition.height, args.batch_rows):
            accumulator.update(partition.slice(start, args.batch_rows))
        accumulator.report(partition="bench")

    accumulator = DriftAccumulator(reference, settings).update(partition)
    report_s = best_of(args.repeat, lambda: accumulator.report(partition="bench"))
    result = {
        "benchmark": "drift_speed",
        "rows": args.rows,
        "columns": args.columns,
        "numeric_columns": n_numeric,
        "categorical_columns": args.categorical,
        "numeric_dtype": np.dtype(dtype).name,
        "reference_rows": reference_frame.height,
        "bins": settings.bins,
        "build_reference_s": round(build_s, 3),
        "one_batch_s": round(best_of(args.repeat, one_batch), 3),
        "batch_rows": args.batch_rows,
        "batches_s": round(best_of(args.repeat, many_batches), 3),
        "report_only_s": round(report_s, 4),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "polars": pl.__version__,
    }
    publish(result, args, "drift-speed", markdown)


def markdown(result: dict, command: str) -> str:
    return "\n".join(
        [
            "## Drift statistics speed",
            "",
            f"`{command}`: drift statistics of a {result['rows']:,}-row x {result['columns']}-column partition "
            f"({result['numeric_dtype']}) against a stored reference of {result['reference_rows']:,} rows "
            f"({result['bins']} bins per numeric column); best of several runs.",
            "",
            "| what | seconds |",
            "|---|---:|",
            f"| one batch of all rows (update + report) | {result['one_batch_s']} |",
            f"| batches of {result['batch_rows']:,} rows (update + report) | {result['batches_s']} |",
            f"| report only | {result['report_only_s']} |",
            f"| building the reference (training time) | {result['build_reference_s']} |",
            "",
            "Target: under 1 s for 2M x 32 on 2 cores.",
        ]
    )


if __name__ == "__main__":
    main()
