"""The run summary contract: what one pipeline run did, written to `runs/<run id>.json`.

Every run accounts for its rows: for each partition, rows in = rows valid + rows quarantined, and rows valid =
rows scored (when the run scores). `build_run_summary` refuses to produce a summary that breaks this.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

from sae_pipeline import lake
from sae_pipeline.config import PipelineConfig
from sae_pipeline.evaluation import detection_metrics
from sae_pipeline.pipeline import read_scored_labels


class RowAccountingError(AssertionError):
    """Rows were lost or invented between reading and writing; never expected, always fatal."""


class PartitionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    rows_scored: int | None
    rows_flagged: int | None
    quarantine_uri: str
    scored_uri: str | None
    drift_report_uri: str | None
    drift_status: str | None


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    config_name: str
    started_at: dt.datetime
    finished_at: dt.datetime
    model_version: str
    model_uri: str
    trained: bool
    output_uri: str
    partitions: list[PartitionSummary]
    totals: dict[str, int]
    evaluation: dict | None

    @property
    def summary_uri(self) -> str:
        return lake.join_uri(self.output_uri, "runs", f"{self.run_id}.json")


def build_run_summary(
    config: PipelineConfig,
    run_id: str,
    started_at: dt.datetime,
    model: dict,
    trained: bool,
    validated: list[dict],
    scored: list[dict],
) -> RunSummary:
    """Join per-partition records, check row conservation, evaluate against labels if any, write the JSON."""
    scored_by_partition = {record["partition"]: record for record in scored}
    partitions = []
    for record in validated:
        result = scored_by_partition.get(record["partition"], {})
        summary = PartitionSummary(
            partition=record["partition"],
            rows_in=record["rows_in"],
            rows_valid=record["rows_valid"],
            rows_quarantined=record["rows_quarantined"],
            rows_scored=result.get("rows_scored"),
            rows_flagged=result.get("rows_flagged"),
            quarantine_uri=record["quarantine_uri"],
            scored_uri=result.get("scored_uri"),
            drift_report_uri=result.get("drift_report_uri"),
            drift_status=result.get("drift_status"),
        )
        if summary.rows_in != summary.rows_valid + summary.rows_quarantined or (
            scored and summary.rows_scored != summary.rows_valid
        ):
            raise RowAccountingError(f"row accounting broken for {summary.partition}: {summary.model_dump()}")
        partitions.append(summary)
    totals = {
        key: sum(getattr(partition, key) or 0 for partition in partitions)
        for key in ("rows_in", "rows_valid", "rows_quarantined", "rows_scored", "rows_flagged")
    }
    labelled = read_scored_labels(config, scored)
    summary = RunSummary(
        run_id=run_id,
        config_name=config.name,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
        model_version=model["model_version"],
        model_uri=model["model_uri"],
        trained=trained,
        output_uri=config.output.uri,
        partitions=partitions,
        totals=totals,
        evaluation=detection_metrics(*labelled) if labelled else None,
    )
    lake.write_json(summary.summary_uri, summary.model_dump(mode="json"))
    return summary


def format_summary(summary: RunSummary) -> str:
    """A short plain-text report for terminals: per-partition counts, where outputs went, label metrics."""
    header = f"{'partition':<22}{'read':>8}{'valid':>8}{'quarant.':>9}{'scored':>8}{'flagged':>8}  drift"
    lines = [f"Run {summary.run_id} with model {summary.model_version}", header, "-" * len(header)]
    for p in summary.partitions:
        lines.append(
            f"{p.partition:<22}{p.rows_in:>8}{p.rows_valid:>8}{p.rows_quarantined:>9}"
            f"{_count(p.rows_scored):>8}{_count(p.rows_flagged):>8}  {p.drift_status or '-'}"
        )
    t = summary.totals
    lines += [
        "-" * len(header),
        f"{'total':<22}{t['rows_in']:>8}{t['rows_valid']:>8}{t['rows_quarantined']:>9}"
        f"{t['rows_scored']:>8}{t['rows_flagged']:>8}",
        "",
        f"outputs under {summary.output_uri}:",
        "  scored/      scored partitions (Hive-style Parquet)",
        "  quarantine/  invalid rows with their reasons",
        "  drift/       drift reports (drift.json, drift.md) per partition",
        f"  model        {summary.model_uri}",
        f"  run summary  {summary.summary_uri}",
    ]
    if summary.evaluation:
        e = summary.evaluation
        auc = "n/a" if e["auc_roc"] is None else f"{e['auc_roc']:.3f}"
        lines += [
            "",
            f"against ground-truth labels (never seen by the model), {e['rows']} scored rows:",
            f"  AUC-ROC {auc}   precision {e['precision']:.3f}   recall {e['recall']:.3f}"
            f"   ({e['flagged']} flagged, {e['positives']} labelled anomalous)",
        ]
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
