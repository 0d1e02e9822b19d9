"""Peak memory of scoring one partition, against the partition's size: it must stay flat.

Writes partitions of 1x, 4x and 16x a base size (default 524,288 rows, so the largest has 8.4M rows x 32 float32
columns), trains the default model once on the smallest, then scores each partition in a fresh process and reads
that process's peak resident memory. Prints JSON with `rows` and `peak_rss_mb` (same order); writes a section of
BENCHMARKS.md. With `--one-row-group` each file is a single row group, as older writers make them (its own section).

    python benchmarks/memory.py [--base-rows 524288] [--columns 32] [--one-row-group] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.lake_scale import score_once, train_champion, write_config, write_partition  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import hive  # noqa: E402
from sae_pipeline.config import load_config  # noqa: E402

MULTIPLES = (1, 4, 16)


def child(config_path: str, partition_name: str, version: str) -> None:
    """Score one partition in this (fresh) process and print its rows, seconds and peak RSS as JSON."""
    config = load_config(config_path)
    partition = next(p for p in hive.partition_records(config.lake) if p.name == partition_name)
    started = time.perf_counter()
    record = score_once(config, partition, version)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": record.rows_in, "seconds": seconds, "peak_rss_mb": _own_peak_rss_kb() / 1024}))


def _own_peak_rss_kb() -> int:
    """This program's peak resident memory. Linux keeps `ru_maxrss` across fork and exec, so a child would report
    its parent's peak when that was higher (the parent builds the partitions); `VmHWM` belongs to this program."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is the best there is (bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))


def run(base_rows: int, columns: int, one_row_group: bool) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="sae-memory-"))
    try:
        lake = workdir / "lake"
        names = []
        for index, multiple in enumerate(MULTIPLES, start=1):
            name = f"day=2026-01-{index:02d}"
            write_partition(lake / name, base_rows * multiple, columns, seed=index, one_row_group=one_row_group)
            names.append(name)
        config_path = write_config(workdir, lake, columns)
        config = load_config(config_path)
        version = train_champion(config, [p for p in hive.partition_records(config.lake) if p.name == names[0]])
        measured = []
        for name in names:
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(config_path), name, version],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            measured.append(json.loads(output.strip().splitlines()[-1]))
        return {
            "columns": columns,
            "one_row_group": one_row_group,
            "rows": [m["rows"] for m in measured],
            "peak_rss_mb": [round(m["peak_rss_mb"], 1) for m in measured],
            "seconds": [round(m["seconds"], 2) for m in measured],
            "largest_over_smallest": measured[-1]["peak_rss_mb"] / measured[0]["peak_rss_mb"],
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(result: dict, command: str) -> str:
    rows = [
        f"| {rows:,} | {rows * result['columns'] * 4 / 1e6:,.0f} | {mb:,.0f} | {seconds:.1f} |"
        for rows, mb, seconds in zip(result["rows"], result["peak_rss_mb"], result["seconds"])
    ]
    files = "each file a single row group" if result["one_row_group"] else "row groups of 262,144 rows"
    return "\n".join(
        [
            "## Scoring memory" + (", files of one row group" if result["one_row_group"] else ""),
            "",
            f"`{command}`: peak resident memory of a fresh process scoring one partition of {result['columns']} "
            f"float32 columns ({files}; validation, scoring, quarantine and scored output, drift report).",
            "",
            "| rows | raw data (MB) | peak RSS (MB) | seconds |",
            "|---:|---:|---:|---:|",
            *rows,
            "",
            f"Largest over smallest peak: **{result['largest_over_smallest']:.2f}x** (target <= 1.5x).",
        ]
    )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-rows", type=int, default=524_288)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--one-row-group", action="store_true", help="write each partition file as one row group")
    add_output_options(parser)
    args = parser.parse_args()
    result = run(args.base_rows, args.columns, args.one_row_group)
    publish(result, args, "memory-one-row-group" if args.one_row_group else "memory", markdown)


if __name__ == "__main__":
    main()
