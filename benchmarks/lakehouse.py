"""Lakehouse tables: scoring throughput with Delta in / Delta out against Parquet in / Parquet out on the same rows,
and a no-op rerun over a 100-partition Delta table.

Throughput: one partition (default 500,000 rows x 32 float32 columns, `lake_scale.write_partition`) as a Hive
Parquet folder and as a Delta table holding the same file's rows; one champion trained on the Parquet lake (not
timed) and copied to the Delta run's registry, so both score with the same model; then, interleaved, the pipeline
scores the partition Parquet in / Parquet out and Delta in / Delta out (`score_partition`: read, validate, score,
write scored + quarantine, drift report, ledger). Best of `--rounds`.

No-op rerun: the sample lake as a Delta table of `--partitions` days (one commit per day, so the log holds that
many commits), trained and scored once; then every data file is truncated to zero bytes (planning must not read
them) and (a) the library's planning (`tables.partition_records` + `pipeline.plan_scoring`) and (b) the whole
`sae-pipeline run` command in a fresh process are timed; the command must answer `nothing to do`.

    python benchmarks/lakehouse.py [--rows 500000] [--columns 32] [--rounds 2] [--partitions 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from deltalake import DeltaTable, write_deltalake

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.lake_scale import prepared_champion, write_partition  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import pipeline, tables, updating  # noqa: E402
from sae_pipeline.config import load_config  # noqa: E402
from sae_pipeline.sample_data import generate_sample_table  # noqa: E402


def _score(config, partition, version) -> float:
    started = time.perf_counter()
    result = pipeline.score_partition(config, partition, version, "benchmark", dt.datetime.now(dt.UTC), "benchmark")
    seconds = time.perf_counter() - started
    assert result.rows_scored + result.rows_quarantined == result.rows_in
    return seconds


def throughput(workdir: Path, rows: int, columns: int, rounds: int) -> dict:
    lake = workdir / "parquet-lake"
    source = write_partition(lake / "day=2026-01-01", rows, columns)
    parquet_config, parquet_partition, version = prepared_champion(workdir / "parquet", lake, columns)

    delta_lake = workdir / "delta-lake"
    table = pq.read_table(source)
    days = pa.array([dt.date(2026, 1, 1)] * rows, pa.date32())
    write_deltalake(str(delta_lake), table.append_column("day", days), partition_by=["day"])
    raw = yaml.safe_load((workdir / "parquet" / "config.yaml").read_text())
    raw["lake"] = {"format": "delta", "uri": str(delta_lake), "partition_keys": {"day": "date"}}
    raw["output"] = {"uri": str(workdir / "delta" / "out"), "format": "delta"}
    (workdir / "delta").mkdir()
    (workdir / "delta" / "config.yaml").write_text(yaml.safe_dump(raw))
    delta_config = load_config(workdir / "delta" / "config.yaml")
    shutil.copytree(parquet_config.output.models_uri, delta_config.output.models_uri)  # the same champion
    [delta_partition] = tables.partition_records(delta_config.lake)

    seconds: dict[str, list[float]] = {"parquet in / parquet out": [], "delta in / delta out": []}
    for _ in range(rounds):
        seconds["parquet in / parquet out"].append(_score(parquet_config, parquet_partition, version))
        seconds["delta in / delta out"].append(_score(delta_config, delta_partition, version))
    return {
        "rows": rows,
        "columns": columns,
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "seconds": seconds,
        "rows_per_s": {name: rows / min(values) for name, values in seconds.items()},
        "delta_to_parquet": min(seconds["parquet in / parquet out"]) / min(seconds["delta in / delta out"]),
    }


def noop_rerun(workdir: Path, partitions: int, repeat: int) -> dict:
    lake = workdir / "many" / "lake"
    generate_sample_table(lake, "delta", days=partitions, rows_per_day=100)
    raw = yaml.safe_load((PROJECT_ROOT / "sample_data" / "telemetry.yaml").read_text())
    raw.update(
        lake={"format": "delta", "uri": "lake", "partition_keys": {"day": "date"}},
        output={"uri": "out", "format": "delta"},
        training={"partitions": None, "max_rows": 5_000},
        model={"max_steps": 100},
    )
    config_path = workdir / "many" / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    records = tables.partition_records(config.lake)
    version = updating.train_or_update(config, records).model_version
    for record in records:
        pipeline.score_partition(config, record, version, "benchmark", dt.datetime.now(dt.UTC))
    commits = DeltaTable(config.lake.uri).version() + 1
    for file in DeltaTable(config.lake.uri).file_uris():
        os.truncate(file, 0)  # a plan that read any data file would now fail

    planning = []
    for _ in range(repeat):
        started = time.perf_counter()
        plan = pipeline.plan_scoring(config, tables.partition_records(config.lake), version)
        planning.append(time.perf_counter() - started)
        assert not plan.to_score and len(plan.up_to_date) == partitions
    env = {**os.environ, "PREFECT_HOME": str(workdir / "prefect"), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", "run", "--config", str(config_path)]
    cli, answer = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=PROJECT_ROOT)
        cli.append(time.perf_counter() - started)
        answer = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
        assert result.returncode == 0 and answer.startswith("nothing to do"), result.stderr
    return {
        "partitions": partitions,
        "log_commits": commits,
        "planning_seconds": planning,
        "cli_seconds": cli,
        "cli_answer": answer,
    }


def markdown(result: dict, command: str) -> str:
    speed, noop = result["throughput"], result["noop"]
    rounds = len(speed["seconds"]["parquet in / parquet out"])
    rows = [
        f"| {name} | {min(values):.2f} | {speed['rows'] / min(values):,.0f} |"
        for name, values in speed["seconds"].items()
    ]
    return "\n".join(
        [
            "## Lakehouse tables",
            "",
            f"`{command}` (1-minute load average {result['load_average']} when it started: compare the rows of "
            "this table with each other, not with other sections measured on an idle machine)",
            "",
            f"Scoring one partition of {speed['rows']:,} rows x {speed['columns']} float32 columns "
            f"({speed['file_mb']} MB of Parquet) with the same champion, best of {rounds} "
            "interleaved rounds (read, validate, score, write scored + quarantine, drift report, ledger):",
            "",
            "| input / output | seconds | rows/s |",
            "|---|---:|---:|",
            *rows,
            "",
            f"Delta in / Delta out runs at {speed['delta_to_parquet']:.2f}x the Parquet speed: the Delta writer spools "
            "each partition to a local file and hands it to delta-rs at the commit (a second local write and read).",
            "",
            f"No-op rerun over a {noop['partitions']}-partition Delta table "
            f"({noop['log_commits']} commits in its log), "
            "with every data file truncated to zero bytes beforehand, so planning provably reads only the log: "
            f"planning (log replay, fingerprints, ledger) {statistics.median(noop['planning_seconds']):.2f} s "
            f"(median of {len(noop['planning_seconds'])}); the whole `sae-pipeline run` command in a fresh process "
            f"{statistics.median(noop['cli_seconds']):.1f} s, answering `{noop['cli_answer']}`.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="timings of the no-op rerun")
    add_output_options(parser)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sae-lakehouse-"))
    try:
        result = {
            "load_average": f"{os.getloadavg()[0]:.1f}",  # other jobs on the machine slow both formats alike
            "throughput": throughput(workdir, args.rows, args.columns, args.rounds),
            "noop": noop_rerun(workdir, args.partitions, args.repeat),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    publish(result, args, "lakehouse", markdown)


if __name__ == "__main__":
    main()
