"""Judging rows in their context (issue 18): what a config's `context:` section finds, and what it costs.

Every run goes through the pipeline itself: a lake of daily Hive partitions, a YAML config, the library's
`train_or_update` on the training partitions and `score_partition` on every partition (what `sae-pipeline run` does,
without Prefect), then the scored rows are read back. Context off and on differ only in the config's `context:`
section, so this script measures a new context feature without changing.

1. SMD (`<data-dir>/smd`, 8 server machines x 38 metrics): a machine's `train/` rows, then its `test/` rows, one
   minute apart, the test rows starting at midnight so that every daily partition is a train day or a test day. The
   model trains on the train days, scores every day, and is judged on the test rows. (a) one lake and one model
   per machine, context off vs on (`SMD_CONTEXT`), with IsolationForest and kNN fitted and scored on the same rows
   for reference; (b) the fleet: every machine in one lake (`machine` the identifier column), one model, one
   fleet-wide alert budget. Metrics: AUC-ROC, average precision, incidents surfaced at a 1% alert budget
   (`sae_pipeline.incidents.incidents_surfaced`: per machine, 1% of its test rows; for the fleet, 1% of all of
   them) and the pipeline's own flagged rate against its `target_fpr`.
2. The context scenario of `sae_pipeline.sample_data` (skipped when this checkout's generator has none): recall at
   `target_fpr` per anomaly kind and the flagged rate of normal rows on the days after the training days.
3. Expected nulls: a generated orders lake whose `payment_method` (nullable) is null in 1% of rows at random and
   whose `discount` is null when an order has none, scored with the default config: the flag rate of normal rows
   with an expected null against the other normal rows (target: at most 2x).
4. Throughput: scoring a generated fleet partition (`benchmarks/lake_scale.py`) with and without a context config,
   best of `--rounds` interleaved rounds (target: context costs at most 1.5x).

    python benchmarks/context.py                                  # everything (SMD needs ../shared/data)
    python benchmarks/context.py --parts smd --machines machine-1-2 machine-1-3 --no-markdown
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.detection import Method, make_methods, smd_split  # noqa: E402
from benchmarks.lake_scale import score_once, train_champion, write_config, write_partition  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import hive, parquet_io, sample_data  # noqa: E402
from sae_pipeline.config import PipelineConfig, load_config  # noqa: E402
from sae_pipeline.evaluation import detection_metrics  # noqa: E402
from sae_pipeline.incidents import (  # noqa: E402
    alerts_at_budget,
    incidents_surfaced,
    label_incidents,
    share_surfaced,
)

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
PARTS = ("smd", "scenario", "nulls", "throughput")
ALERT_BUDGET = 0.01

#: Context of the SMD runs: each machine is a sequence, judged against its own baseline and its last 12 minutes.
#: The timestamps are synthetic (SMD does not say when it was recorded), so there are no calendar features.
SMD_CONTEXT = {"entity": "machine", "history": {}}
#: Every machine's test rows start at this midnight and its training rows end there.
SMD_TEST_START = dt.datetime(2026, 1, 1)

#: Context of the scenario and of the throughput runs: everything the config offers.
FULL_CONTEXT = {"calendar": ["hour_of_day", "day_of_week"], "history": {}}
SCENARIO_DAYS, SCENARIO_TRAINING_DAYS = 10, 7

ORDERS_DAYS, ORDERS_TRAINING_DAYS, ORDERS_ROWS_PER_DAY = 14, 7, 20_000
COUNTRIES = {"DE": 60.0, "FR": 55.0, "US": 80.0, "GB": 70.0, "ES": 45.0}  # typical price of one item
COUNTRY_SHARE = [0.35, 0.2, 0.25, 0.12, 0.08]
PAYMENT_METHODS = ("card", "paypal", "invoice", "bank_transfer")
PAYMENT_SHARE = [0.55, 0.25, 0.12, 0.08]
PAYMENT_NULL_RATE, DISCOUNT_RATE, PLANTED_RATE = 0.01, 0.7, 0.002


# --- the pipeline as every part runs it ------------------------------------------------------------------------


@dataclass(frozen=True)
class Lake:
    """A lake written for this benchmark: its folder, its columns as a config declares them, its training days."""

    root: Path
    columns: list[dict]
    training: list[str]


@dataclass(frozen=True)
class PipelineRun:
    """What one pipeline run over a lake gave: every scored row (quarantined rows are not scored) and its config."""

    scored: pl.DataFrame
    config: PipelineConfig
    train_seconds: float
    score_seconds: float


def write_daily_partitions(frame: pl.DataFrame, root: Path, time_column: str) -> list[str]:
    """Write `frame` as `day=YYYY-MM-DD/part-0.parquet` partitions of `root` (the key only in the folder name)."""
    names = []
    for (day,), rows in frame.sort(time_column, maintain_order=True).group_by(
        pl.col(time_column).dt.date(), maintain_order=True
    ):
        names.append(f"day={day.isoformat()}")
        (root / names[-1]).mkdir(parents=True, exist_ok=True)
        pq.write_table(rows.to_arrow(), root / names[-1] / "part-0.parquet", compression="zstd")
    return names


def declared_columns(root: Path, identifiers: tuple[str, ...], labels: tuple[str, ...]) -> list[dict]:
    """The `columns:` of a config for the lake at `root`, as a new user writes them from the data: strings are
    categorical unless named as identifiers, datetimes are timestamps, columns with nulls are nullable."""
    frame = pl.read_parquet(str(root / "day=*" / "*.parquet"), hive_partitioning=False)
    columns = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Datetime:
            kind, role = "datetime", "timestamp"
        elif dtype == pl.Boolean:
            kind, role = "bool", "categorical"
        elif dtype == pl.String:
            kind, role = "string", "identifier" if name in identifiers else "categorical"
        else:
            kind, role = ("int" if dtype.is_integer() else "float"), "numeric"
        column = {"name": name, "type": kind, "role": "label" if name in labels else role}
        if frame.get_column(name).null_count():
            column["nullable"] = True
        columns.append(column)
    return columns


def run_pipeline(workdir: Path, lake: Lake, context: dict | None, max_rows: int) -> PipelineRun:
    """Train on the lake's training partitions and score every partition with the pipeline's own steps."""
    workdir.mkdir(parents=True, exist_ok=True)
    raw = {
        "name": "context-benchmark",
        "lake": {"uri": str(lake.root), "partition_keys": {"day": "date"}},
        "columns": lake.columns,
        "training": {"partitions": lake.training, "max_rows": max_rows},
        "output": {"uri": str(workdir / "out")},
        **({"context": context} if context else {}),
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(workdir / "config.yaml")
    partitions = hive.partition_records(config.lake)
    started = time.perf_counter()
    version = train_champion(config, partitions)
    trained = time.perf_counter()
    results = [score_once(config, partition, version) for partition in partitions]
    scored = pl.concat([parquet_io.read_partition(result.scored_uri) for result in results])
    return PipelineRun(scored, config, trained - started, time.perf_counter() - trained)


def crash_safe(measure: Callable[[], dict]) -> dict:
    """One configuration's measurement; a crash becomes its `error` (traceback printed) and the benchmark goes on."""
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - one configuration's crash must not end the run
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}


def after_training(run: PipelineRun, lake: Lake) -> pl.DataFrame:
    """The scored rows of the days after the last training day (by the config's timestamp column)."""
    last = dt.date.fromisoformat(max(lake.training).removeprefix("day="))
    timestamp = run.config.columns_with_role("timestamp")[0].name
    return run.scored.filter(pl.col(timestamp).dt.date() > last)


def ranking_metrics(labels: np.ndarray, scores: np.ndarray, entities: np.ndarray | None = None) -> dict:
    """AUC-ROC, average precision and incidents surfaced at the alert budget (one budget over all rows given)."""
    return {
        "auc_roc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "incidents": int(label_incidents(labels, entities).max() + 1),
        "incidents_surfaced": incidents_surfaced(labels, scores, entities, ALERT_BUDGET),
    }


# --- 1. SMD -------------------------------------------------------------------------------------------------------


def smd_frame(data_dir: Path, machine: str) -> pl.DataFrame:
    """One machine's rows in time order: train rows up to `SMD_TEST_START`, test rows from it; `label` is null on
    the train rows (SMD labels only its test rows)."""
    split = smd_split(data_dir / "smd", machine)
    values = np.vstack([split.X_train, split.X_test])
    minutes = np.arange(-split.X_train.shape[0], split.X_test.shape[0])
    return pl.DataFrame(
        {
            "minute": np.datetime64(SMD_TEST_START, "us") + minutes.astype("timedelta64[m]"),
            "machine": [machine] * minutes.size,
            **{f"m{index:02d}": values[:, index] for index in range(values.shape[1])},
            "label": [None] * split.X_train.shape[0] + split.y_test.astype(bool).tolist(),
        },
        schema_overrides={"label": pl.Boolean},
    )


def smd_lake(frame: pl.DataFrame, root: Path) -> Lake:
    """Write SMD rows (one machine's or a fleet's) as daily partitions; the days before `SMD_TEST_START` train."""
    names = write_daily_partitions(frame, root, "minute")
    training = [name for name in names if name < f"day={SMD_TEST_START.date().isoformat()}"]
    return Lake(root, declared_columns(root, identifiers=("machine",), labels=("label",)), training)


def smd_pipeline_metrics(run: PipelineRun) -> dict:
    """Metrics on the test rows, with one alert budget over all of them, and the pipeline's own flags; `by_machine`:
    each machine's share of its incidents surfaced under that one budget and its flagged rate of normal rows."""
    test = run.scored.filter(pl.col("label").is_not_null()).sort("machine", "minute")
    flagged, labels = test.get_column("is_anomaly").to_numpy(), test.get_column("label").to_numpy()
    scores, machines = test.get_column("anomaly_score").to_numpy(), test.get_column("machine").to_numpy()
    incidents, alerts = label_incidents(labels, machines), alerts_at_budget(scores, ALERT_BUDGET)
    by_machine = {
        machine: {
            "incidents_surfaced": share_surfaced(incidents[rows], alerts[rows]),
            "flagged_rate_normal": float(flagged[rows & ~labels].mean()),
        }
        for machine, rows in ((machine, machines == machine) for machine in np.unique(machines))
    }
    return {
        **ranking_metrics(labels, scores, machines),
        "flagged_rate": float(flagged.mean()),
        "flagged_rate_normal": float(flagged[~labels].mean()),
        "target_fpr": run.config.thresholds.target_fpr,
        "train_seconds": run.train_seconds,
        "score_seconds": run.score_seconds,
        "by_machine": by_machine,
    }


def reference_metrics(data_dir: Path, machine: str, methods: list[Method]) -> dict:
    """Reference methods (IsolationForest and kNN as `benchmarks/detection.py` runs them) fitted on the train rows,
    judged on the test rows."""
    split = smd_split(data_dir / "smd", machine)
    metrics = {}
    for method in methods:
        model = method.build(0)
        model.fit(split.X_train)
        metrics[method.name] = ranking_metrics(split.y_test, np.asarray(method.score(model, split.X_test)))
    return metrics


def summarise_machines(per_machine: dict[str, dict]) -> dict:
    """Mean and worst machine of each metric of one method."""
    summary = {}
    for key in ("auc_roc", "average_precision", "incidents_surfaced", "flagged_rate", "flagged_rate_normal"):
        values = {machine: m[key] for machine, m in per_machine.items() if m.get(key) is not None}
        if values:
            worst = max(values, key=values.get) if key.startswith("flagged") else min(values, key=values.get)
            summary[key] = {"mean": float(np.mean(list(values.values()))), "worst": values[worst], "worst_at": worst}
    return summary


def run_smd(workdir: Path, data_dir: Path, machines: list[str] | None, max_rows: int) -> dict:
    """Each machine's lake, context off and on, with IForest and kNN beside; then every machine in one fleet lake."""
    available = sorted(path.name.removesuffix(".txt.gz") for path in (data_dir / "smd" / "train").glob("*.txt.gz"))
    if not available:
        return {"skipped": f"no SMD data under {data_dir / 'smd'}"}
    unknown = sorted(set(machines or []) - set(available))
    if unknown:
        raise SystemExit(f"unknown SMD machines {unknown}; known: {available}")
    machines = machines or available
    contexts = {"context off": None, "context on": SMD_CONTEXT}
    references = make_methods(["iforest", "knn"], {})  # kNN needs PyOD (the `bench` extra)
    per_machine = {f"SAE, {name}": {} for name in contexts} | {method.name: {} for method in references}
    frames = []
    for machine in machines:
        frames.append(smd_frame(data_dir, machine))
        lake = smd_lake(frames[-1], workdir / "smd" / machine / "lake")
        for name, context in contexts.items():
            folder = workdir / "smd" / machine / name.replace(" ", "-")
            per_machine[f"SAE, {name}"][machine] = crash_safe(
                lambda: smd_pipeline_metrics(run_pipeline(folder, lake, context, max_rows))  # noqa: B023
            )
        for method, metrics in reference_metrics(data_dir, machine, references).items():
            per_machine[method][machine] = metrics
        surfaced = ", ".join(
            f"{method} {rows[machine]['incidents_surfaced']:.2f}" for method, rows in per_machine.items()
        )
        print(f"smd {machine}: incidents surfaced {surfaced}", file=sys.stderr, flush=True)
    fleet_lake = smd_lake(pl.concat(frames).sort("minute", "machine"), workdir / "smd" / "fleet" / "lake")
    fleet = {}
    for name, context in contexts.items():
        folder = workdir / "smd" / "fleet" / name.replace(" ", "-")
        fleet[f"SAE, {name}"] = crash_safe(
            lambda: smd_pipeline_metrics(run_pipeline(folder, fleet_lake, context, max_rows))  # noqa: B023
        )
    return {
        "machines": machines,
        "context": SMD_CONTEXT,
        "max_training_rows": max_rows,
        "alert_budget": ALERT_BUDGET,
        "per_machine": per_machine,
        "per_machine_summary": {method: summarise_machines(rows) for method, rows in per_machine.items()},
        "fleet": fleet,
    }


# --- 2. the context scenario ---------------------------------------------------------------------------------


def context_scenario_lake(root: Path) -> Lake | None:
    """The one place that knows the context scenario's generator (branch `scenario`): write its lake under `root`
    and say which days train, or None when this checkout's `sample_data` has no such scenario."""
    generate = getattr(sample_data, "generate_context_lake", None)
    if generate is None:
        return None
    paths = generate(root, days=SCENARIO_DAYS, clean_days=SCENARIO_TRAINING_DAYS)
    training = sorted(Path(path).parent.name for path in paths)[:SCENARIO_TRAINING_DAYS]
    columns = declared_columns(root, identifiers=("host_id",), labels=("label_is_anomaly", "anomaly_kind"))
    return Lake(root, columns, training)


def run_scenario(workdir: Path, max_rows: int) -> dict:
    """The context scenario's lake, context off and on, judged on the days after the training days."""
    lake = context_scenario_lake(workdir / "scenario" / "lake")
    if lake is None:
        return {"skipped": "sae_pipeline.sample_data has no context scenario yet (generate_context_lake)"}
    entity = next(column["name"] for column in lake.columns if column["role"] == "identifier")
    contexts = {"context off": None, "context on": {"entity": entity, **FULL_CONTEXT}}
    runs = {}
    for name, context in contexts.items():
        run = run_pipeline(workdir / "scenario" / name.replace(" ", "-"), lake, context, max_rows)
        held_out = after_training(run, lake)
        runs[name] = kind_recalls(held_out) | {"target_fpr": run.config.thresholds.target_fpr}
    return {"contexts": contexts, "training_days": lake.training, "runs": runs}


def kind_recalls(scored: pl.DataFrame) -> dict:
    """Recall per anomaly kind and the flagged rate of normal rows (`evaluation.detection_metrics`)."""
    labels = scored.get_column("label_is_anomaly").to_numpy()
    metrics = detection_metrics(
        labels,
        scored.get_column("anomaly_score").to_numpy(),
        scored.get_column("is_anomaly").to_numpy(),
        scored.get_column("anomaly_kind").to_numpy(),
    )
    return {
        "recall": {kind: cell["recall"] for kind, cell in metrics["by_kind"].items()},
        "flagged_rate_normal": metrics["normal_flagged_rate"],
        "normal_rows": int((~labels).sum()),
    }


# --- 3. expected nulls ---------------------------------------------------------------------------------------


def orders_frame(days: int, rows_per_day: int, seed: int = 0) -> pl.DataFrame:
    """Orders of a web shop: amount = items x a country's item price; a discount on 70% of orders (null on the
    others); payment_method null on 1% of rows at random; a few planted anomalies (an amount 8-20x too high)."""
    rng = np.random.default_rng(seed)
    rows = days * rows_per_day
    start = np.datetime64("2026-03-01", "us")
    order_time = start + np.sort(rng.integers(0, days * 86_400_000_000, rows)).astype("timedelta64[us]")
    country = rng.choice(list(COUNTRIES), rows, p=COUNTRY_SHARE)
    items = 1 + rng.poisson(1.5, rows)
    amount = items * np.array([COUNTRIES[c] for c in country]) * rng.lognormal(0.0, 0.3, rows)
    planted = rng.random(rows) < PLANTED_RATE
    amount[planted] *= rng.uniform(8, 20, planted.sum())
    discount = np.where(rng.random(rows) < DISCOUNT_RATE, amount * rng.uniform(0.05, 0.2, rows), np.nan)
    payment = rng.choice(PAYMENT_METHODS, rows, p=PAYMENT_SHARE).astype(object)
    payment[rng.random(rows) < PAYMENT_NULL_RATE] = None
    return pl.DataFrame(
        {
            "order_time": order_time,
            "amount": amount.round(2),
            "items": items,
            "discount": discount.round(2),
            "country": country,
            "payment_method": payment.tolist(),
            "label_is_anomaly": planted,
        }
    ).with_columns(pl.col("discount").fill_nan(None))


def run_nulls(workdir: Path, max_rows: int) -> dict:
    """The orders lake with the default config: flag rates of normal rows with and without expected nulls."""
    root = workdir / "orders" / "lake"
    names = write_daily_partitions(orders_frame(ORDERS_DAYS, ORDERS_ROWS_PER_DAY), root, "order_time")
    lake = Lake(root, declared_columns(root, (), labels=("label_is_anomaly",)), names[:ORDERS_TRAINING_DAYS])
    run = run_pipeline(workdir / "orders" / "default-config", lake, None, max_rows)
    held_out = after_training(run, lake)
    normal = held_out.filter(~pl.col("label_is_anomaly"))
    payment_null, discount_null = pl.col("payment_method").is_null(), pl.col("discount").is_null()
    groups = {
        "payment_method null": payment_null,
        "payment_method and discount null": payment_null & discount_null,
        "only discount null": ~payment_null & discount_null,
        "no nulls": ~payment_null & ~discount_null,
        "payment_method not null": ~payment_null,
    }
    rates = {name: flag_rate(normal.filter(rows)) for name, rows in groups.items()}
    expected, others = rates["payment_method null"]["rate"], rates["payment_method not null"]["rate"]
    return {
        "rows_per_day": ORDERS_ROWS_PER_DAY,
        "days": ORDERS_DAYS,
        "training_days": len(lake.training),
        "target_fpr": run.config.thresholds.target_fpr,
        "flag_rates": rates,
        "expected_null_ratio": expected / others if others else None,
        "planted_recall": flag_rate(held_out.filter(pl.col("label_is_anomaly")))["rate"],
    }


def flag_rate(rows: pl.DataFrame) -> dict:
    """How many rows, and the share of them that the pipeline flagged."""
    return {"rows": rows.height, "rate": float(rows.get_column("is_anomaly").mean()) if rows.height else None}


# --- 4. throughput -------------------------------------------------------------------------------------------


def run_throughput(workdir: Path, rows: int, rounds: int, columns: int = 32, hosts: int = 200) -> dict:
    """Scoring seconds of a fleet's second day (its first rows take history from the first day) without and with
    `FULL_CONTEXT`, each model trained on the first day; the two alternate which goes first in each round."""
    lake = workdir / "throughput" / "lake"
    days = [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
    for index, day in enumerate(days):
        write_partition(lake / f"day={day.isoformat()}", rows, columns, seed=index, hosts=hosts, day=day)
    contexts = {"without context": None, "with context": {"entity": "host", **FULL_CONTEXT}}
    prepared = {}
    for index, (name, context) in enumerate(contexts.items()):
        variant = workdir / "throughput" / f"variant-{index}"
        variant.mkdir(parents=True)
        config = load_config(write_config(variant, lake, columns, fleet=True, context=context))
        partitions = hive.partition_records(config.lake)
        prepared[name] = (config, partitions[1], train_champion(config, partitions[:1]))
    seconds = {name: [] for name in prepared}
    for round_index in range(rounds):
        order = list(prepared) if round_index % 2 == 0 else list(reversed(prepared))  # neither always runs first
        for name in order:
            arguments = prepared[name]
            started = time.perf_counter()
            score_once(*arguments)
            seconds[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "rows": rows,
        "columns": columns,
        "hosts": hosts,
        "torch_threads": torch.get_num_threads(),
        "contexts": contexts,
        "scoring_seconds": seconds,
        "rows_per_s": {name: rows / value for name, value in best.items()},
        "context_cost": best["with context"] / best["without context"],
    }


# --- report --------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.torch_threads or torch.get_num_threads())
    workdir = Path(tempfile.mkdtemp(prefix="sae-context-bench-"))
    parts: dict[str, Callable[[], dict]] = {
        "smd": lambda: run_smd(workdir, args.data_dir, args.machines, args.max_training_rows),
        "scenario": lambda: run_scenario(workdir, args.max_training_rows),
        "nulls": lambda: run_nulls(workdir, args.max_training_rows),
        "throughput": lambda: run_throughput(workdir, args.throughput_rows, args.rounds),
    }
    result = {}
    try:
        for name in args.parts:
            started = time.perf_counter()
            result[name] = crash_safe(parts[name])
            result[name]["seconds"] = time.perf_counter() - started
            print(f"{name}: {result[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _yaml(value: dict) -> str:
    """A config section as it reads in YAML: `{entity: machine, history: {window: 12}}`."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


RANKING = ("auc_roc", "average_precision", "incidents_surfaced")
FLAGGED = ("flagged_rate", "flagged_rate_normal")


def smd_markdown(smd: dict) -> list[str]:
    def mean_worst(summary: dict, key: str) -> str:
        cell = summary.get(key)
        if cell is None:
            return "–"
        if key in FLAGGED:
            return f"{cell['mean']:.2%} (max {cell['worst']:.2%}, {cell['worst_at']})"
        return f"{cell['mean']:.3f} ({cell['worst']:.3f}, {cell['worst_at']})"

    summary_rows = [
        f"| per machine, {method} | {' | '.join(mean_worst(summary, key) for key in RANKING + FLAGGED)} |"
        for method, summary in smd["per_machine_summary"].items()
    ]
    for method, metrics in smd["fleet"].items():
        if "error" in metrics:
            summary_rows.append(f"| fleet (one model), {method} | crashed: {metrics['error']} | | | | |")
            continue
        by_machine = summarise_machines(metrics["by_machine"])
        surfaced, normal = by_machine.get("incidents_surfaced"), by_machine["flagged_rate_normal"]
        cells = [
            _number(metrics["auc_roc"]),
            _number(metrics["average_precision"]),
            f"{metrics['incidents_surfaced']:.3f} (worst machine {surfaced['worst']:.3f}, {surfaced['worst_at']})",
            _percent(metrics["flagged_rate"]),
            f"{metrics['flagged_rate_normal']:.2%} (max {normal['worst']:.2%}, {normal['worst_at']})",
        ]
        summary_rows.append(f"| fleet (one model), {method} | {' | '.join(cells)} |")
    methods = list(smd["per_machine"])
    machine_rows = []
    for machine in smd["machines"]:
        first = smd["per_machine"][methods[0]][machine]
        cells = [
            f"{_number(rows[machine].get('incidents_surfaced'))} / {_number(rows[machine].get('average_precision'))}"
            if "error" not in rows[machine]
            else "crashed"
            for rows in smd["per_machine"].values()
        ]
        machine_rows.append(f"| {machine} | {first['incidents']} | {' | '.join(cells)} |")
    fleet_incidents = next(iter(smd["fleet"].values()))["incidents"]
    target = next(iter(smd["fleet"].values()))["target_fpr"]
    return [
        f"{len(smd['machines'])} machines; each machine's train rows then its test rows at 1-minute steps, in daily "
        f"partitions; the pipeline trains on the train days (at most {smd['max_training_rows']:,} rows) and scores "
        f"every day; metrics on the test rows. Incidents surfaced: the share of labelled incidents (runs of "
        f"anomalous test rows of one machine) with an alert among the top {smd['alert_budget']:.0%} of test rows by "
        f"score (per machine: 1% of that machine's rows; fleet: one budget over all machines' rows, "
        f"{fleet_incidents} incidents). Context on: `context: {_yaml(smd['context'])}`. IForest and kNN as in "
        f"`benchmarks/detection.py`, fitted on the same train rows. Per machine: mean (worst, machine); fleet: "
        f"all machines together (the worst machine's share of its incidents under the fleet's one budget). "
        f"Flagged: the share of test rows, and of normal test rows, that the pipeline's own `is_anomaly` flags "
        f"(target_fpr {target:.0%}). {smd['seconds']:.0f} s.",
        "",
        "| run | AUC-ROC | average precision | incidents surfaced at 1% | flagged | flagged, normal rows |",
        "|---|---|---|---|---|---|",
        *summary_rows,
        "",
        "Per machine: incidents surfaced at 1% / average precision.",
        "",
        f"| machine | incidents | {' | '.join(methods)} |",
        f"|---|---:|{'---:|' * len(methods)}",
        *machine_rows,
        "",
        "Targets: incidents surfaced >= 0.85 per machine and for the fleet with one model (DQX's best: 0.82); "
        "average precision with context at least 0.05 above without.",
    ]


def scenario_markdown(scenario: dict) -> list[str]:
    runs = scenario["runs"]
    kinds = sorted({kind for run in runs.values() for kind in run["recall"]})
    target = runs["context off"]["target_fpr"]
    return [
        f"`sample_data`'s context scenario, trained on {len(scenario['training_days'])} days, judged on the days "
        f"after them at target_fpr {target:.1%}; context on: `context: {_yaml(scenario['contexts']['context on'])}`. "
        f"{scenario['seconds']:.0f} s.",
        "",
        "| | context off | context on |",
        "|---|---:|---:|",
        *[
            f"| recall, {kind} | {_percent(runs['context off']['recall'].get(kind))} | "
            f"{_percent(runs['context on']['recall'].get(kind))} |"
            for kind in kinds
        ],
        f"| flagged rate, normal rows | {_percent(runs['context off']['flagged_rate_normal'])} | "
        f"{_percent(runs['context on']['flagged_rate_normal'])} |",
        "",
        f"Targets: recall >= 0.8 on each contextual kind; flagged rate of normal rows within ±30% of {target:.1%}.",
    ]


def nulls_markdown(nulls: dict) -> list[str]:
    rows = [
        f"| {name} | {rates['rows']:,} | {_percent(rates['rate'])} |" for name, rates in nulls["flag_rates"].items()
    ]
    ratio = nulls["expected_null_ratio"]
    ratio_text = "–" if ratio is None else f"{ratio:.1f}"
    return [
        f"A generated orders lake ({nulls['days']} days x {nulls['rows_per_day']:,} rows: amount, items, discount "
        f"(null on the 30% of orders without one), country, payment_method (`nullable: true`, null on 1% of rows at "
        f"random)), the default config, trained on {nulls['training_days']} days; flag rates of the normal rows of "
        f"the other days (target_fpr {nulls['target_fpr']:.1%}; planted anomalies found: "
        f"{_percent(nulls['planted_recall'])}). {nulls['seconds']:.0f} s.",
        "",
        "| normal rows | rows | flagged |",
        "|---|---:|---:|",
        *rows,
        "",
        f"**{ratio_text}x**: rows with an expected null (`payment_method`) are flagged at this multiple of the "
        "other normal rows (target: at most 2x).",
    ]


def throughput_markdown(throughput: dict) -> list[str]:
    rows = [
        f"| {name} | {min(throughput['scoring_seconds'][name]):.2f} | {rate:,.0f} |"
        for name, rate in throughput["rows_per_s"].items()
    ]
    return [
        f"Scoring one day of a generated fleet ({throughput['rows']:,} rows x {throughput['columns']} float32 "
        f"columns, {throughput['hosts']} hosts; the model trained on the day before) through `score_partition`, "
        f"best of {len(throughput['scoring_seconds']['with context'])} interleaved rounds, torch on "
        f"{throughput['torch_threads']} thread(s); `context: {_yaml(throughput['contexts']['with context'])}`.",
        "",
        "| config | seconds | rows/s |",
        "|---|---:|---:|",
        *rows,
        "",
        f"**{throughput['context_cost']:.2f}x**: scoring with context takes this multiple of the time without "
        "(target: at most 1.5x).",
    ]


TITLES = {
    "smd": "SMD: per machine and as one fleet",
    "scenario": "The context scenario",
    "nulls": "Expected nulls",
    "throughput": "Throughput",
}
RENDERERS = {
    "smd": smd_markdown,
    "scenario": scenario_markdown,
    "nulls": nulls_markdown,
    "throughput": throughput_markdown,
}


def markdown(result: dict, command: str) -> str:
    lines = [
        "## Context: SMD fleet, context scenario, expected nulls, cost",
        "",
        f"`{command}` (issue 18): each part through the pipeline (a lake of daily partitions, a config, "
        "`train_or_update`, `score_partition`); context off and on differ only in the config's `context:` section.",
    ]
    for name, part in result.items():
        lines += ["", f"### {TITLES[name]}", ""]
        if "skipped" in part or "error" in part:
            lines.append(f"Skipped: {part['skipped']}." if "skipped" in part else f"Crashed: `{part['error']}`.")
        else:
            lines += RENDERERS[name](part)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="holds smd/ (default ../shared/data)")
    parser.add_argument("--machines", nargs="+", help="SMD machines (default: all), e.g. machine-1-2")
    parser.add_argument("--max-training-rows", type=int, default=100_000, help="the configs' training.max_rows")
    parser.add_argument("--throughput-rows", type=int, default=300_000, help="rows of the scored throughput day")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--torch-threads", type=int, default=1, help="0: torch's default")
    add_output_options(parser)
    args = parser.parse_args()
    result = run(args)
    publish(result, args, "context", markdown)
    if '"error": ' in json.dumps(result):
        raise SystemExit("some configurations crashed: their errors are in the JSON and the tables")


if __name__ == "__main__":
    main()
