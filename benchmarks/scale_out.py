"""Scale-out with Dask: end-to-end scoring rows/s of the real flow on local Dask workers, against its thread pool.

Generates a lake of `--partitions` partitions (default 8 x 250,000 rows x 32 float32 columns; every partition holds
the same rows, a stable lake) and trains the champion on the first one (not timed), starts one Prefect server (not
timed), then for each configuration runs the scoring flow (`lake_pipeline`, mode `score`) in this process on a
fresh output folder, so that every partition is scored: first the default `scoring.task_runner: threads`, then
`task_runner: dask` with `dask_workers: N` (a `LocalCluster` the flow starts and stops) for each N of `--workers`.
Just before each configuration, a pyarrow read + write of the same partitions estimates what the storage allows.

The pipeline records no duration per partition, so where the time goes is read from the flow run's task runs on
the Prefect server (each task's start and end): until the plan is made (flow start, lease, discovery, plan), the
task runner's start (a LocalCluster's start-up), the scoring span (first partition's start to last one's end), the
task runner's stop, and the steps after scoring (volume, drift trend, incidents, pages, summary, events). On a
shared machine, the cores the run used and those other processes took meanwhile (`/proc/stat`, `getrusage`) say how
far the figures are from what dedicated cores give.

    python benchmarks/scale_out.py [--partitions 8] [--rows 250000] [--columns 32] [--workers 1 2]
        [--model '{"density_weight": 0}'] [--note TEXT] [--json PATH] [--no-markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.lake_scale import prepared_champion, write_config, write_partition  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402
from benchmarks.throughput import pyarrow_copy  # noqa: E402
from flows.embedded_server import EmbeddedServer, start_timeout_s  # noqa: E402
from sae_pipeline.config import load_config  # noqa: E402
from sae_pipeline.registry import ModelRegistry  # noqa: E402

#: Seconds to wait for the server to have every task run's end (task runs on Dask workers report asynchronously).
TASK_RUNS_TIMEOUT_S = 60
#: The parts of a run's wall time, in order (`where_time_goes`).
PHASES = ("until_planned_s", "task_runner_start_s", "scoring_span_s", "task_runner_stop_s", "after_scoring_s")


@dataclass(frozen=True)
class TaskTiming:
    """One task run of a flow run, as the Prefect server recorded it."""

    name: str
    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def where_time_goes(
    started: dt.datetime, finished: dt.datetime, tasks: list[TaskTiming], partitions: list[str]
) -> dict[str, float | dict[str, float]]:
    """Split a scoring run's wall time at its task runs, so the time outside scoring can be told apart (`PHASES`):
    until the plan is made, the task runner's start (until the first partition starts), the scoring span, the task
    runner's stop (until the next task starts), and the rest; plus the partitions' own seconds, summed, and the
    seconds of each task after scoring, by task name."""
    scoring = [task for task in tasks if task.name in {f"score {name}" for name in partitions}]
    if len(scoring) != len(partitions):
        raise ValueError(f"{len(scoring)} scoring task runs recorded for {len(partitions)} partitions")
    planned = max(task.end for task in tasks if task.name.startswith("plan-scoring"))
    first_start, last_end = min(task.start for task in scoring), max(task.end for task in scoring)
    later = sorted((task for task in tasks if task.start >= last_end), key=lambda task: task.start)
    next_start = later[0].start if later else finished
    return {
        "until_planned_s": (planned - started).total_seconds(),
        "task_runner_start_s": (first_start - planned).total_seconds(),
        "scoring_span_s": (last_end - first_start).total_seconds(),
        "task_runner_stop_s": (next_start - last_end).total_seconds(),
        "after_scoring_s": (finished - next_start).total_seconds(),
        "partition_seconds_total": sum(task.seconds for task in scoring),
        # Prefect names a task run `<task name>-<key>`.
        "after_scoring_tasks_s": {task.name.rsplit("-", 1)[0]: task.seconds for task in later},
    }


def start_prefect_server(home: Path) -> int:
    """One Prefect API server for every run, started before any timing, with its database under `home`
    (what the CLI starts per command, `flows.embedded_server`); return its process id."""
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    os.environ.pop("PREFECT_API_URL", None)
    server = EmbeddedServer(verbose=False)
    server.launch()
    server.wait_until_ready(start_timeout_s(), on_retry=lambda message: print(message, file=sys.stderr))
    return server.process.pid


def busy_cpu_seconds() -> float:
    """CPU seconds the machine has been busy since boot, all cores and processes together (Linux `/proc/stat`)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(server_pid: int) -> float:
    """CPU seconds of this benchmark: this process, its children that have exited (a LocalCluster's workers, once
    closed) and the Prefect server, so that what the rest of the machine took can be told apart."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    server_ticks = sum(map(int, Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
    return sum(used.ru_utime + used.ru_stime for used in usage) + server_ticks / os.sysconf("SC_CLK_TCK")


def recorded_task_runs(flow_run_id: str, partitions: int) -> list[TaskTiming]:
    """The flow run's finished task runs, once the server has the end of each of its `partitions` scoring tasks."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
    deadline = time.monotonic() + TASK_RUNS_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=only_this_run)
            finished = [run for run in runs if run.start_time and run.end_time]
            if sum(run.name.startswith("score ") for run in finished) >= partitions or time.monotonic() > deadline:
                return [TaskTiming(run.name, run.start_time, run.end_time) for run in finished]
            time.sleep(0.5)


def copy_rows_per_s(sources: list[Path], rows: int, folder: Path) -> float:
    """A pyarrow read + write (zstd) of every partition, one after another: how fast storage and Parquet allow."""
    folder.mkdir()
    seconds = sum(pyarrow_copy(source, folder / f"{index}.parquet") for index, source in enumerate(sources))
    shutil.rmtree(folder)
    return rows / seconds


def configurations(workers: list[int]) -> dict[str, dict]:
    """The `scoring` settings compared, by label: the default thread pool, then a LocalCluster of each size."""
    return {
        "threads (default)": {},
        **{
            f"dask, {count} worker{'s' if count > 1 else ''}": {"task_runner": "dask", "dask_workers": count}
            for count in workers
        },
    }


def measure(
    label: str,
    scoring: dict,
    folder: Path,
    lake: Path,
    columns: int,
    model: dict,
    champion: tuple[ModelRegistry, str],
    server_pid: int,
) -> dict:
    """Score the whole lake once with these `scoring` settings on a fresh output folder; time it, split it, and
    say how many cores it used and how many other processes took meanwhile."""
    from flows.lake_pipeline import run_in_process  # after start_prefect_server has set Prefect's environment

    folder.mkdir()
    config_path = write_config(folder, lake, columns, model, scoring=scoring)
    registry, version = champion
    ModelRegistry(load_config(config_path).output.models_uri).save(registry.load(version))
    busy_before, own_before = busy_cpu_seconds(), own_cpu_seconds(server_pid)
    started = dt.datetime.now(dt.UTC)
    summary = run_in_process(config_path=str(config_path), mode="score", model=version)
    finished = dt.datetime.now(dt.UTC)
    busy, own = busy_cpu_seconds() - busy_before, own_cpu_seconds(server_pid) - own_before
    shutil.rmtree(folder)
    partitions = [partition.partition for partition in summary.partitions]
    scored = {f"score {name}" for name in partitions}
    tasks = recorded_task_runs(summary.run_id, len(partitions))
    workers = scoring.get("dask_workers")
    wall = (finished - started).total_seconds()
    rows = summary.totals["rows_in"]
    phases = where_time_goes(started, finished, tasks, partitions)
    mean_partition_s = phases["partition_seconds_total"] / len(partitions)
    return {
        "label": label,
        "task_runner": scoring.get("task_runner", "threads"),
        "workers": workers,
        "wall_s": wall,
        "cores_used": own / wall,
        "cores_taken_by_other_processes": max(busy - own, 0.0) / wall,
        "rows": rows,
        "rows_per_s": rows / wall,
        "rows_per_s_per_worker": rows / wall / workers if workers else None,
        "phases": phases,
        "outside_scoring_span_s": wall - phases["scoring_span_s"],
        "partitions_in_flight": phases["partition_seconds_total"] / phases["scoring_span_s"],
        "mean_partition_s": mean_partition_s,
        "mean_partition_rows_per_s": rows / len(partitions) / mean_partition_s,
        "partition_seconds": {task.name.removeprefix("score "): task.seconds for task in tasks if task.name in scored},
    }


def run(partitions: int, rows: int, columns: int, workers: list[int], model: dict) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="sae-scale-out-"))
    try:
        lake = workdir / "lake"
        sources = [
            write_partition(lake / f"day={dt.date(2026, 1, 1) + dt.timedelta(days=index)}", rows, columns)
            for index in range(partitions)
        ]
        config, _, version = prepared_champion(workdir / "champion", lake, columns, model)
        champion = (ModelRegistry(config.output.models_uri), version)
        server_pid = start_prefect_server(workdir / "prefect")
        measured = []
        for index, (label, scoring) in enumerate(configurations(workers).items()):
            storage = copy_rows_per_s(sources, partitions * rows, workdir / "copies")
            outcome = measure(label, scoring, workdir / f"run-{index}", lake, columns, model, champion, server_pid)
            measured.append({**outcome, "copy_rows_per_s": storage})
            print(f"{label}: {measured[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        return {
            "date": dt.date.today().isoformat(),
            "cpu_count": os.cpu_count(),
            "partitions": partitions,
            "rows_per_partition": rows,
            "columns": columns,
            "lake_mb": round(sum(source.stat().st_size for source in sources) / 1e6, 1),
            "model": model,
            "configurations": measured,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _throughput_row(entry: dict, one_worker_rows_per_s: float | None) -> str:
    cells = [
        entry["label"],
        f"{entry['wall_s']:.1f}",
        f"{entry['rows_per_s']:,.0f}",
        f"{entry['rows_per_s_per_worker']:,.0f}" if entry["workers"] else "n/a",
        f"{entry['rows_per_s'] / one_worker_rows_per_s:.2f}x" if one_worker_rows_per_s else "n/a",
        f"{entry['mean_partition_s']:.2f} ({entry['mean_partition_rows_per_s']:,.0f})",
        f"{entry['partitions_in_flight']:.2f}",
        f"{entry['copy_rows_per_s']:,.0f}",
        f"{entry['cores_used']:.2f} / {entry['cores_taken_by_other_processes']:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict, command: str) -> str:
    measured = result["configurations"]
    one_worker = next((entry["rows_per_s"] for entry in measured if entry["workers"] == 1), None)
    phases = [
        f"| {entry['label']} | "
        + " | ".join(f"{entry['phases'][name]:.2f}" for name in PHASES)
        + f" | {entry['outside_scoring_span_s']:.2f} |"
        for entry in measured
    ]
    model = f"model settings `{json.dumps(result['model'])}`" if result["model"] else "the default model"
    return "\n".join(
        [
            "## Scale-out with Dask",
            "",
            f"`{command}`, {result['date']}, {result['cpu_count']} cores: the scoring flow (`lake_pipeline`, mode "
            "`score`, in the benchmark's process, against a Prefect server started beforehand) over "
            f"{result['partitions']} partitions of {result['rows_per_partition']:,} rows x {result['columns']} "
            f"float32 columns ({result['lake_mb']} MB of Parquet) with {model}, trained beforehand; one run per "
            "configuration, each on a fresh output folder (every partition scored). The Dask configurations are a "
            "`LocalCluster` that the flow starts and stops (`dask_workers: N`, one thread each).",
            *(["", f"Conditions: {result['note']}"] if result.get("note") else []),
            "",
            "| configuration | wall s | rows/s | rows/s per worker | vs 1 worker | mean partition s (its rows/s) | "
            "partitions in flight | pyarrow copy rows/s | cores used: this run / other processes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(_throughput_row(entry, one_worker) for entry in measured),
            "",
            "Where the wall time goes, in seconds, from the flow run's task runs on the Prefect server: until the "
            "plan is made (flow start, lease, discovery, plan); the task runner's start until the first partition "
            "starts (a LocalCluster: its processes, their imports, the first task's shipping); the scoring span, "
            "first partition's start to last one's end; the task runner's stop; after scoring (volume, drift trend, "
            "incidents, pages, run summary, events, artifacts). `partitions in flight` is the partitions' task "
            "seconds summed over the scoring span. The pyarrow copy (read + write with zstd, one partition after "
            "another) ran just before each configuration. Cores used are CPU seconds over wall seconds during the "
            "run: the benchmark's (its process, the Dask workers, the Prefect server) and the rest of the machine's.",
            "",
            "| configuration | until planned | runner start | scoring span | runner stop | after scoring | "
            "outside the span |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *phases,
            "",
            "Tasks after scoring, in seconds:",
            "",
            *(
                f"- {entry['label']}: "
                + ", ".join(
                    f"`{name}` {seconds:.2f}" for name, seconds in entry["phases"]["after_scoring_tasks_s"].items()
                )
                for entry in measured
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows", type=int, default=250_000, help="rows per partition")
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="LocalCluster sizes to measure")
    parser.add_argument(
        "--model", type=json.loads, default={}, help="model settings as JSON, e.g. '{\"density_weight\": 0}'"
    )
    parser.add_argument("--note", help="what else ran on the machine, for the BENCHMARKS.md section")
    add_output_options(parser)
    args = parser.parse_args()
    result = run(args.partitions, args.rows, args.columns, args.workers, args.model)
    publish({**result, "note": args.note}, args, "scale-out", markdown)


if __name__ == "__main__":
    main()
