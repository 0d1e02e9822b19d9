"""The run summary contract: what one pipeline run did, written to `runs/<run id>.json`.

Every run accounts for its rows: for each partition it scored, rows in = rows scored + rows quarantined.
`build_run_summary` refuses to produce a summary that breaks this. A run also says what it decided about training,
which partitions were already up to date, which left the lake and which failed, in one sentence (`message`).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

from sae_pipeline import storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.evaluation import detection_metrics
from sae_pipeline.pipeline import read_scored_labels


class RowAccountingError(AssertionError):
    """Rows were lost or invented between reading and writing; never expected, always fatal."""


class PartitionSummary(BaseModel):
    """One partition scored by this run."""

    model_config = ConfigDict(extra="forbid")

    partition: str
    reason: str
    model_version: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    rows_scored: int
    rows_flagged: int
    quarantine_uri: str
    scored_uri: str
    drift_report_uri: str
    drift_status: str
    ignored_columns: list[str] = []


class FailedPartition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: str
    error: str


class RunSummary(BaseModel):
    """What one run did (the run summary contract, documented in the README)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    kind: str
    config_name: str
    started_at: dt.datetime
    finished_at: dt.datetime
    output_uri: str
    message: str
    training: dict | None
    model_version: str | None
    model_uri: str | None
    unknown_columns: list[str]
    partitions: list[PartitionSummary]
    up_to_date: list[str]
    removed: list[str]
    failed: list[FailedPartition]
    drift_policy: dict | None
    totals: dict[str, int]
    evaluation: dict | None

    @property
    def summary_uri(self) -> str:
        return storage.join_uri(self.output_uri, "runs", f"{self.run_id}.json")


def _message(training: dict | None, scored: int, up_to_date: int, removed: int, failed: int, kind: str) -> str:
    parts = []
    if training is not None:
        if training["action"] == "skip":
            parts.append(f"no training ({training['reason']})")
        else:
            verdict = "promoted to champion" if training["promoted"] else "not promoted"
            parts.append(f"{training['action']} -> {training['model_version']}, {verdict} ({training['promotion_reason']})")
            if training["skipped_partitions"]:
                left_out = ", ".join(failure["partition"] for failure in training["skipped_partitions"])
                parts.append(f"left out of training (unreadable or invalid): {left_out}")
    if kind != "train":
        parts.append(f"{scored} partition(s) scored, {up_to_date} up to date, {removed} removed, {failed} failed")
        if scored == 0 and removed == 0 and failed == 0:
            parts.append("nothing written")
    return "; ".join(parts)


def _drift_message(drift_policy: dict | None) -> str:
    if drift_policy is None:
        return ""
    asked = f"; drift policy asked for training ({', '.join(drift_policy['partitions'])})"
    training = drift_policy["training"]
    if training is None:
        return asked + ": left to the next train-or-update run"
    if training["action"] == "skip":
        return asked + f": nothing new to learn ({training['reason']})"
    verdict = "promoted" if training["promoted"] else "not promoted"
    return asked + f": {training['action']} -> {training['model_version']}, {verdict}"


def build_run_summary(
    config: PipelineConfig,
    run_id: str,
    kind: str,
    started_at: dt.datetime,
    training: dict | None = None,
    model: dict | None = None,
    plan: dict | None = None,
    scored: list[dict] = (),
    failed: list[dict] = (),
    drift_policy: dict | None = None,
) -> RunSummary:
    """Join the run's records, check row conservation, evaluate against labels if any, write the JSON."""
    partitions = [PartitionSummary.model_validate({k: v for k, v in r.items() if k in PartitionSummary.model_fields}) for r in scored]
    for partition in partitions:
        if partition.rows_in != partition.rows_scored + partition.rows_quarantined or partition.rows_scored != partition.rows_valid:
            raise RowAccountingError(f"row accounting broken for {partition.partition}: {partition.model_dump()}")
    totals = {
        key: sum(getattr(partition, key) for partition in partitions)
        for key in ("rows_in", "rows_valid", "rows_quarantined", "rows_scored", "rows_flagged")
    }
    plan = plan or {"up_to_date": [], "removed": []}
    labelled = read_scored_labels(config, scored)
    summary = RunSummary(
        run_id=run_id,
        kind=kind,
        config_name=config.name,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
        output_uri=config.output.uri,
        message=_message(training, len(partitions), len(plan["up_to_date"]), len(plan["removed"]), len(failed), kind)
        + _drift_message(drift_policy),
        training=training,
        model_version=model["model_version"] if model else None,
        model_uri=model["model_uri"] if model else None,
        unknown_columns=model["unknown_columns"] if model else [],
        partitions=partitions,
        up_to_date=plan["up_to_date"],
        removed=plan["removed"],
        failed=[FailedPartition.model_validate(record) for record in failed],
        drift_policy=drift_policy,
        totals=totals,
        evaluation=detection_metrics(*labelled) if labelled else None,
    )
    storage.write_json(summary.summary_uri, summary.model_dump(mode="json"))
    return summary


def format_summary(summary: RunSummary) -> str:
    """A short plain-text report for terminals: what the run decided, per-partition counts, where outputs went."""
    lines = [f"Run {summary.run_id}: {summary.message}"]
    if summary.partitions:
        header = f"{'partition':<22}{'read':>8}{'valid':>8}{'quarant.':>9}{'scored':>8}{'flagged':>8}  {'drift':<9}why"
        lines += ["", header, "-" * len(header)]
        for p in summary.partitions:
            lines.append(
                f"{p.partition:<22}{p.rows_in:>8}{p.rows_valid:>8}{p.rows_quarantined:>9}"
                f"{p.rows_scored:>8}{p.rows_flagged:>8}  {p.drift_status:<9}{p.reason}"
            )
        t = summary.totals
        lines += [
            "-" * len(header),
            f"{'total':<22}{t['rows_in']:>8}{t['rows_valid']:>8}{t['rows_quarantined']:>9}"
            f"{t['rows_scored']:>8}{t['rows_flagged']:>8}",
        ]
    if summary.removed:
        lines.append(f"removed (no longer in the lake): {', '.join(summary.removed)}")
    for failure in summary.failed:
        lines.append(f"FAILED {failure.partition}: {failure.error}")
    ignored = sorted({name for p in summary.partitions for name in p.ignored_columns})
    if ignored:
        lines.append(f"columns in the files but not in the config (left out of the outputs): {', '.join(ignored)}")
    if summary.unknown_columns:
        lines.append(f"columns the model does not know (ignored; retrain to use them): {', '.join(summary.unknown_columns)}")
    lines += ["", f"outputs under {summary.output_uri}:"]
    if summary.model_uri:
        lines.append(f"  model        {summary.model_uri}")
    lines += [
        "  scored/      scored partitions (Hive-style Parquet)",
        "  quarantine/  invalid rows with their reasons",
        "  drift/       drift reports per partition (report.html, report.json) and the trend page index.html",
        f"  run summary  {summary.summary_uri}",
    ]
    if summary.evaluation:
        e = summary.evaluation
        auc = "n/a" if e["auc_roc"] is None else f"{e['auc_roc']:.3f}"
        lines += [
            "",
            f"against ground-truth labels (never seen by the model), {e['rows']} rows scored in this run:",
            f"  AUC-ROC {auc}   precision {e['precision']:.3f}   recall {e['recall']:.3f}"
            f"   ({e['flagged']} flagged, {e['positives']} labelled anomalous)",
        ]
    return "\n".join(lines)
