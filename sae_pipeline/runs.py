"""The run summary contract: what one pipeline run did, written to `runs/<run id>.json`.

Every run accounts for its rows: for each partition it scored, rows in = rows scored + rows quarantined.
`build_run_summary` refuses to produce a summary that breaks this. A run also says what it decided about training,
which partitions were already up to date, which left the lake and which failed, in one sentence (`message`). Its
fields are the records the run's steps handed each other (`records`); its JSON is `model_dump(mode="json")`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from sae_pipeline import storage
from sae_pipeline.config import OutputConfig, PipelineConfig
from sae_pipeline.evaluation import detection_metrics
from sae_pipeline.ledger import Ledger
from sae_pipeline.pipeline import ROW_COUNTS, read_scored_labels
from sae_pipeline.records import (
    DriftHandoff,
    DriftPolicyOutcome,
    FailedPartition,
    IncidentCounts,
    PartitionResult,
    PartitionSummary,
    RunKind,
    ScoringModel,
    ScoringPlan,
    StalePartitions,
    TrainingOutcome,
    TrainingSkipped,
)
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.volume import FreshnessVerdict, VolumeVerdict

__all__ = [
    "FailedPartition",
    "PartitionSummary",
    "RowAccountingError",
    "RunSummary",
    "build_run_summary",
    "format_evaluation",
    "format_summary",
    "write_run_summary",
]


class RowAccountingError(AssertionError):
    """Rows were lost or invented between reading and writing; never expected, always fatal."""


class RunSummary(BaseModel):
    """What one run did (the run summary contract, documented in the README). `drift_handoff`: the training run a
    scoring run started on its drifted partitions (`score_flow` with `on_drift="start-training"`)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    kind: RunKind
    config_name: str
    started_at: dt.datetime
    finished_at: dt.datetime
    output_uri: str
    #: How the scored and quarantine tables are stored (`output.format`).
    output_format: Literal["parquet", "delta"] = "parquet"
    message: str
    training: TrainingOutcome | None
    model_version: str | None
    model_uri: str | None
    unknown_columns: list[str]
    partitions: list[PartitionSummary]
    up_to_date: list[str]
    removed: list[str]
    failed: list[FailedPartition]
    drift_policy: DriftPolicyOutcome | None
    drift_handoff: DriftHandoff | None = None
    totals: dict[str, int]
    evaluation: dict | None
    #: The incidents table after the run (None when the run scored and removed nothing).
    incidents: IncidentCounts | None = None
    #: The champion when the run ended, and the committed partitions another version scored.
    champion: str | None = None
    stale: StalePartitions | None = None
    #: Each scored partition's volume against earlier partitions, and the lake against `lake.expected_every`.
    volume: list[VolumeVerdict] = []
    freshness: FreshnessVerdict | None = None

    @property
    def summary_uri(self) -> str:
        return storage.join_uri(OutputConfig(uri=self.output_uri).runs_uri, f"{self.run_id}.json")

    @property
    def did_nothing(self) -> bool:
        """No model trained, nothing scored, removed or failed, no drift request: such a run leaves no summary
        (an hourly schedule over an unchanged lake would otherwise grow `runs/` by a file an hour)."""
        trained = self.training is not None and self.training.action != "skip"
        return not (
            trained or self.partitions or self.removed or self.failed or self.drift_policy or self.drift_handoff
        )


def _message(
    training: TrainingOutcome | None,
    scored: int,
    up_to_date: int,
    removed: int,
    failed: int,
    kind: str,
    late: bool = False,
) -> str:
    parts = []
    if isinstance(training, TrainingSkipped):
        parts.append(f"no training ({training.reason})")
    elif training is not None:
        verdict = "promoted to champion" if training.promoted else "not promoted"
        parts.append(f"{training.action} -> {training.model_version}, {verdict} ({training.promotion_reason})")
        if training.skipped_partitions:
            left_out = ", ".join(failure.partition for failure in training.skipped_partitions)
            parts.append(f"left out of training (unreadable or invalid): {left_out}")
    if kind != "train":
        parts.append(f"{scored} partition(s) scored, {up_to_date} up to date, {removed} removed, {failed} failed")
        if scored == 0 and removed == 0 and failed == 0:
            # a late lake is marked on the trend page even by a run with nothing to score
            parts.append("nothing written but the trend page (the lake is late)" if late else "nothing written")
    return "; ".join(parts)


def _drift_message(drift_policy: DriftPolicyOutcome | None) -> str:
    if drift_policy is None:
        return ""
    asked = f"; drift policy asked for training ({', '.join(drift_policy.partitions)})"
    training = drift_policy.training
    if training is None:
        return asked + ": left to the next train-or-update run"
    if isinstance(training, TrainingSkipped):
        return asked + f": nothing new to learn ({training.reason})"
    verdict = "promoted" if training.promoted else "not promoted"
    return asked + f": {training.action} -> {training.model_version}, {verdict}"


def build_run_summary(
    config: PipelineConfig,
    run_id: str,
    kind: RunKind,
    started_at: dt.datetime,
    training: TrainingOutcome | None = None,
    model: ScoringModel | None = None,
    plan: ScoringPlan | None = None,
    scored: Sequence[PartitionResult] = (),
    failed: Sequence[FailedPartition] = (),
    drift_policy: DriftPolicyOutcome | None = None,
    incidents: IncidentCounts | None = None,
    config_path: str | None = None,
    volume: Sequence[VolumeVerdict] = (),
    freshness: FreshnessVerdict | None = None,
) -> RunSummary:
    """Join the run's records, check row conservation, evaluate against labels if any (`write_run_summary` writes
    the result)."""
    partitions = [result.summary() for result in scored]
    for partition in partitions:
        if (
            partition.rows_in != partition.rows_scored + partition.rows_quarantined
            or partition.rows_scored != partition.rows_valid
        ):
            raise RowAccountingError(f"row accounting broken for {partition.partition}: {partition.model_dump()}")
    totals = {key: sum(getattr(partition, key) for partition in partitions) for key in ROW_COUNTS}
    plan = plan or ScoringPlan()
    labelled = read_scored_labels(config, partitions)
    return RunSummary(
        run_id=run_id,
        kind=kind,
        config_name=config.name,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
        output_uri=config.output.uri,
        output_format=config.output.format,
        message=_message(
            training,
            len(partitions),
            len(plan.up_to_date),
            len(plan.removed),
            len(failed),
            kind,
            late=freshness is not None and freshness.late,
        )
        + _drift_message(drift_policy),
        training=training,
        model_version=model.model_version if model else None,
        model_uri=model.model_uri if model else None,
        unknown_columns=model.unknown_columns if model else [],
        partitions=partitions,
        up_to_date=plan.up_to_date,
        removed=plan.removed,
        failed=list(failed),
        drift_policy=drift_policy,
        totals=totals,
        evaluation=detection_metrics(*labelled) if labelled else None,
        incidents=incidents,
        volume=list(volume),
        freshness=freshness,
        **_model_state(config, config_path),
    )


def stale_partitions(config: PipelineConfig, config_path: str | None = None) -> StalePartitions | None:
    """The committed partitions scored by another version than the current champion, with the command that
    rescores them (None without a champion or when every partition is scored by it)."""
    champion = ModelRegistry(config.output.models_uri).champion()
    if champion is None:
        return None
    entries = Ledger(config.output.ledger_uri).entries()
    others = {name: entry.model_version for name, entry in sorted(entries.items()) if entry.model_version != champion}
    if not others:
        return None
    command = f"sae-pipeline score --config {config_path or 'CONFIG'} --rescore-with {ModelRegistry.CHAMPION}"
    return StalePartitions(champion=champion, partitions=others, command=command)


def _model_state(config: PipelineConfig, config_path: str | None) -> dict:
    """`champion` and `stale` of a run summary: what the registry and the ledger say when the run ends."""
    return {
        "champion": ModelRegistry(config.output.models_uri).champion(),
        "stale": stale_partitions(config, config_path),
    }


def format_model_state(champion: str | None, stale: StalePartitions | None) -> list[str]:
    """Terminal lines naming the champion and, when other versions scored some partitions, which and how to rescore
    them."""
    if champion is None:
        return []
    lines = [f"champion at the end of the run: {champion}"]
    if stale is not None:
        by_version: dict[str, list[str]] = {}
        for name, version in stale.partitions.items():
            by_version.setdefault(version, []).append(name)
        described = "; ".join(f"{version}: {', '.join(names)}" for version, names in by_version.items())
        lines += [
            f"{len(stale.partitions)} partition(s) keep the scores of another version ({described})",
            f"  to rescore them with the champion: {stale.command}",
        ]
    return lines


def write_run_summary(summary: RunSummary) -> str | None:
    """Write the summary to `runs/<run id>.json` (replacing what an earlier write of the same run left) and return
    its URI; a run that did nothing writes none (see `RunSummary.did_nothing`)."""
    if summary.did_nothing:
        return None
    storage.write_json(summary.summary_uri, summary.model_dump(mode="json"))
    return summary.summary_uri


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
        lines.append(
            f"columns the model does not know (ignored; retrain to use them): {', '.join(summary.unknown_columns)}"
        )
    if summary.incidents is not None:
        i = summary.incidents
        lines.append(
            f"incidents: {i.total} in all, {i.open} open, {i.closed} reviewed, {i.suppressed} suppressed "
            f"({i.new} new this run, {i.new_suppressed} of them suppressed by an earlier normal verdict)"
        )
    lines += [f"volume: {verdict.describe()}" for verdict in summary.volume if verdict.unusual]
    if summary.freshness is not None:
        lines.append(f"freshness: {summary.freshness.describe()}")
    lines += format_model_state(summary.champion, summary.stale)
    lines += ["", f"outputs under {summary.output_uri}:"]
    if summary.model_uri:
        lines.append(f"  model        {summary.model_uri}")
    kind = "a Delta table" if summary.output_format == "delta" else "Hive-style Parquet"
    lines += [
        f"  scored/      scored partitions ({kind})",
        "  quarantine/  invalid rows with their reasons"
        + (" (a Delta table)" if summary.output_format == "delta" else ""),
        "  drift/       drift reports per partition (report.html, report.json) and the trend page index.html;",
        "               anomalies.html: incidents with their rows and why (per partition, and over the lake)",
        "  incidents/   flagged rows grouped into incidents (review them: sae-pipeline review list)",
        f"  run summary  {'none (the run did nothing)' if summary.did_nothing else summary.summary_uri}",
    ]
    if summary.evaluation:
        lines += ["", *format_evaluation(summary.evaluation)]
    return "\n".join(lines)


def format_evaluation(evaluation: dict) -> list[str]:
    """The run summary's `evaluation` as terminal lines: overall quality, then the flagged rate on normal rows (to
    compare with `target_fpr`) and recall per anomaly kind where the summary has them (older summaries do not)."""
    e = evaluation
    auc = "n/a" if e["auc_roc"] is None else f"{e['auc_roc']:.3f}"
    lines = [
        f"against ground-truth labels (never seen by the model), {e['rows']} rows scored in this run:",
        f"  AUC-ROC {auc}   precision {e['precision']:.3f}   recall {e['recall']:.3f}"
        f"   ({e['flagged']} flagged, {e['positives']} labelled anomalous)",
    ]
    if e.get("normal_flagged_rate") is not None:
        lines.append(f"  flagged among normal rows: {e['normal_flagged_rate']:.2%}")
    if e.get("by_kind"):
        lines.append(f"  {'recall per kind':<22}{'rows':>8}{'flagged':>8}{'recall':>8}")
        for kind, counts in e["by_kind"].items():
            lines.append(f"  {kind:<22}{counts['rows']:>8}{counts['flagged']:>8}{counts['recall']:>8.3f}")
    return lines
