"""Scoring throughput against the disk: the pipeline vs a bare pyarrow read + write of the same partition.

Generates one partition (default 2M rows x 32 float32 columns), trains the default model once (not timed), then
alternates, in the same run, (a) pyarrow reading the file and writing it back and (b) the pipeline scoring the
partition (raw Parquet in; scored partition with every contract column, quarantine and drift report out). The best
of `--rounds` of each is compared. Prints JSON with `pipeline_rows_per_s`, `pyarrow_copy_rows_per_s`, `ratio`;
`--profile` prints the scoring profile's top lines instead of updating BENCHMARKS.md.

    python benchmarks/throughput.py [--rows 2000000] [--columns 32] [--rounds 3] [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.lake_scale import prepared_lake, score_once  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402


def pyarrow_copy(source: Path, target: Path) -> float:
    started = time.perf_counter()
    pq.write_table(pq.read_table(source), target, compression="zstd")
    return time.perf_counter() - started


def run(rows: int, columns: int, rounds: int, profile: bool, model: dict) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="sae-throughput-"))
    try:
        config, partition, version = prepared_lake(workdir, rows, columns, model)
        source = Path(partition["uri"]) / "part-0.parquet"
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(score_once, config, partition, version)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return {}
        copies, scorings = [], []
        for _ in range(rounds):
            copies.append(pyarrow_copy(source, workdir / "copy.parquet"))
            started = time.perf_counter()
            record = score_once(config, partition, version)
            scorings.append(time.perf_counter() - started)
        assert record["rows_scored"] + record["rows_quarantined"] == rows
        return {
            "rows": rows,
            "columns": columns,
            "file_mb": round(source.stat().st_size / 1e6, 1),
            "torch_threads": torch.get_num_threads(),
            "pyarrow_copy_seconds": copies,
            "pipeline_seconds": scorings,
            "pyarrow_copy_rows_per_s": rows / min(copies),
            "pipeline_rows_per_s": rows / min(scorings),
            "ratio": min(copies) / min(scorings),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(result: dict, command: str) -> str:
    return "\n".join(
        [
            "## Scoring throughput",
            "",
            f"`{command}`: one partition of {result['rows']:,} rows x {result['columns']} float32 columns "
            f"({result['file_mb']} MB of Parquet), default model trained beforehand, torch on "
            f"{result['torch_threads']} threads; best of {len(result['pipeline_seconds'])} interleaved rounds.",
            "",
            "| what | seconds | rows/s |",
            "|---|---:|---:|",
            f"| pyarrow read + write (zstd) | {min(result['pyarrow_copy_seconds']):.2f} | "
            f"{result['pyarrow_copy_rows_per_s']:,.0f} |",
            f"| pipeline: validate, score, write scored + quarantine, drift report | {min(result['pipeline_seconds']):.2f} | "
            f"{result['pipeline_rows_per_s']:,.0f} |",
            "",
            f"**ratio {result['ratio']:.2f}** (target >= 0.5).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one scoring instead")
    parser.add_argument("--model", type=json.loads, default={}, help='model settings as JSON, e.g. \'{"density_weight": 0}\'')
    add_output_options(parser)
    args = parser.parse_args()
    result = run(args.rows, args.columns, args.rounds, args.profile, args.model)
    if args.profile:
        return
    publish(result, args, "throughput", markdown)


if __name__ == "__main__":
    main()
