"""What a run tells the outside world: the events the flows emit to Prefect, as plain records.

The library never imports Prefect: it returns `EventRecord`s (name, resource, payload: JSON values only), and
`flows/events.py` hands each to `prefect.events.emit_event`. Names and payloads (documented in the README):

- `sae-pipeline.partition.scored`: every committed partition (rows, flagged rate, incidents opened, drift verdict
  and share, volume verdict, model version, report location);
- `sae-pipeline.incident.opened`: an incident that is new and open (id, entity, start/end, rows, peak score, min
  p-value, explaining features);
- `sae-pipeline.drift.detected`: a partition with dataset drift;
- `sae-pipeline.flagged-rate.exceeded`: a partition whose flagged rate is above `drift.policy.anomaly_rate_factor`
  x the model's target;
- `sae-pipeline.volume.unusual`: rows read outside the band of earlier partitions, or a quarantined share above it;
- `sae-pipeline.partition.missing` / `sae-pipeline.partition.late`: the lake against `lake.expected_every`;
- `sae-pipeline.partition.failed`: a partition the run could not commit (the next run retries it);
- `sae-pipeline.model.promoted` / `sae-pipeline.model.rolled-back`: the champion changed.

Resources: `sae-pipeline.partition.<output uri>/<partition>`, `sae-pipeline.incident.<output uri>/<incident id>`,
`sae-pipeline.lake.<output uri>`, `sae-pipeline.model.<output uri>/<version>`. Events carry no credentials (URIs
are stripped of any user info and query) and no row values, except the row's and the typical value of the columns
listed in `events.explanation_values` in an incident's explanation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import polars as pl

from sae_pipeline import storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.incidents.build import read_incidents
from sae_pipeline.incidents.flagged import read_flagged
from sae_pipeline.records import (
    FailedPartition,
    IncidentCounts,
    ModelTrained,
    PartitionResult,
    Record,
    TrainingOutcome,
)
from sae_pipeline.volume import FreshnessVerdict, VolumeVerdict

PREFIX = "sae-pipeline"
SCORED = f"{PREFIX}.partition.scored"
INCIDENT_OPENED = f"{PREFIX}.incident.opened"
DRIFT_DETECTED = f"{PREFIX}.drift.detected"
FLAGGED_RATE_EXCEEDED = f"{PREFIX}.flagged-rate.exceeded"
VOLUME_UNUSUAL = f"{PREFIX}.volume.unusual"
PARTITION_MISSING = f"{PREFIX}.partition.missing"
PARTITION_LATE = f"{PREFIX}.partition.late"
PARTITION_FAILED = f"{PREFIX}.partition.failed"
MODEL_PROMOTED = f"{PREFIX}.model.promoted"
MODEL_ROLLED_BACK = f"{PREFIX}.model.rolled-back"
#: The resource label of an `incident.opened` event: `critical` when its min p-value is below
#: `events.critical_pvalue`, else `warning` (an automation's trigger can match it; it cannot compare numbers).
SEVERITY_LABEL = f"{PREFIX}.severity"


class EventRecord(Record):
    """One event to emit: its name, the resource it concerns (`prefect.resource.id` and a readable name) and a
    payload of JSON values."""

    event: str
    resource_id: str
    resource_name: str
    payload: dict[str, Any]
    #: More labels of the resource (automations match on them, not on the payload).
    labels: dict[str, str] = {}


def public_uri(uri: str) -> str:
    """`uri` without user info, query or fragment (where a presigned URL or a password would hide)."""
    parts = urlsplit(uri)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _resource(config: PipelineConfig, kind: str, name: str | None = None) -> tuple[str, str]:
    base = public_uri(config.output.uri).rstrip("/")
    return (f"{PREFIX}.{kind}.{base}" + (f"/{name}" if name else ""), name or base)


def _event(
    config: PipelineConfig, event: str, kind: str, name: str | None, payload: dict, labels: dict | None = None
) -> EventRecord:
    resource_id, resource_name = _resource(config, kind, name)
    return EventRecord(
        event=event, resource_id=resource_id, resource_name=resource_name, payload=payload, labels=labels or {}
    )


def _report(config: PipelineConfig, partition: str) -> dict:
    return storage.read_json(storage.join_uri(config.output.drift_uri, partition, "report.json"))


def _opened_incidents(config: PipelineConfig, opened: Sequence[str]) -> pl.DataFrame:
    incidents = read_incidents(config)
    return incidents.filter(pl.col("incident_id").is_in(list(opened)) & (pl.col("status") == "open"))


def _flagged_of(config: PipelineConfig, incidents: pl.DataFrame) -> pl.DataFrame:
    """The flagged rows of the partitions `incidents` span (each partition read once)."""
    partitions = sorted({name for names in incidents.get_column("partitions").to_list() for name in names or []})
    columns = ["source_partition", "incident_entity", "anomaly_score", "explanation"]
    return read_flagged(config, partitions, columns)


def incident_explanation(config: PipelineConfig, incident: dict, flagged: pl.DataFrame | None = None) -> list[dict]:
    """The explanation of an incident's peak row (its highest-scoring flagged row): per explaining column its
    share of the score and, for columns listed in `events.explanation_values` only, the row's and the typical
    value (level and typical level for categorical ones). `flagged`: rows of its partitions, if already read."""
    allowed = set(config.events.explanation_values)
    partitions = list(incident["partitions"] or [])
    if flagged is None:
        flagged = _flagged_of(config, pl.DataFrame({"partitions": [partitions]}))
    rows = flagged.filter(pl.col("source_partition").is_in(partitions))
    entity = pl.col("incident_entity")
    rows = rows.filter((entity == incident["entity"]) if incident["entity"] is not None else entity.is_null())
    rows = rows.filter(pl.col("anomaly_score") == incident["peak_score"])
    if rows.is_empty():
        return [{"column": name} for name in incident["top_features"] or []]
    explained = []
    for item in rows.row(0, named=True)["explanation"] or []:
        entry = {"column": item["column"], "share": item.get("share")}
        if item["column"] in allowed:
            for key in ("value", "typical", "level", "typical_level"):
                if item.get(key) is not None:
                    entry[key] = item[key]
        explained.append(entry)
    return explained


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def incident_events(config: PipelineConfig, opened: Sequence[str]) -> list[EventRecord]:
    """An `incident.opened` event per incident of `opened` that is still open (at most
    `events.max_incident_events`, worst first by min p-value)."""
    incidents = _opened_incidents(config, opened).sort(["min_pvalue", "peak_score"], descending=[False, True])
    incidents = incidents.head(config.events.max_incident_events)
    flagged = _flagged_of(config, incidents) if incidents.height else None
    events = []
    for incident in incidents.iter_rows(named=True):
        payload = {
            "incident_id": incident["incident_id"],
            "entity": incident["entity"],
            "start": _iso(incident["start"]),
            "end": _iso(incident["end"]),
            "rows": incident["rows"],
            "peak_score": incident["peak_score"],
            "min_pvalue": incident["min_pvalue"],
            "top_features": list(incident["top_features"] or []),
            "explanation": incident_explanation(config, incident, flagged),
            "partitions": list(incident["partitions"] or []),
            "model_version": incident["model_version"],
            "output_uri": public_uri(config.output.uri),
        }
        critical = incident["min_pvalue"] is not None and incident["min_pvalue"] < config.events.critical_pvalue
        labels = {SEVERITY_LABEL: "critical" if critical else "warning"}
        events.append(_event(config, INCIDENT_OPENED, "incident", incident["incident_id"], payload, labels))
    return events


def partition_events(
    config: PipelineConfig,
    scored: Sequence[PartitionResult],
    incidents: IncidentCounts | None,
    volumes: Sequence[VolumeVerdict] = (),
    run_id: str | None = None,
) -> list[EventRecord]:
    """For each committed partition: its `partition.scored` event, and `drift.detected`,
    `flagged-rate.exceeded` and `volume.unusual` where they apply."""
    opened = _opened_incidents(config, incidents.opened) if incidents is not None else None
    starts = opened.get_column("partitions").list.first().to_list() if opened is not None else []
    opened_in = Counter(starts)  # partition -> new open incidents that start in it
    by_partition = {verdict.partition: verdict for verdict in volumes}
    factor = config.drift.policy.anomaly_rate_factor
    events = []
    for result in scored:
        report = _report(config, result.partition)
        volume = by_partition.get(result.partition)
        rate = result.rows_flagged / result.rows_scored if result.rows_scored else 0.0
        anomalies = report.get("anomalies") or {}
        expected = anomalies.get("expected_rate")
        report_uri = public_uri(result.drift_report_uri)
        common = {
            "partition": result.partition,
            "output_uri": public_uri(config.output.uri),
            "model_version": result.model_version,
            "report": report_uri,
            "run_id": run_id,
        }
        payload = {
            **common,
            "rows_in": result.rows_in,
            "rows_scored": result.rows_scored,
            "rows_quarantined": result.rows_quarantined,
            "rows_flagged": result.rows_flagged,
            "flagged_rate": rate,
            "expected_flagged_rate": expected,
            "incidents_opened": opened_in[result.partition],
            "drift_status": result.drift_status,
            "dataset_drift": report["dataset_drift"],
            "drift_share": report["drift_share"],
            "drifted_columns": list(report["drifted_columns"]),
            "volume": volume.model_dump(mode="json", exclude={"partition"}) if volume else None,
        }
        events.append(_event(config, SCORED, "partition", result.partition, payload))
        if report["dataset_drift"]:
            drift = {
                **common,
                "drift_share": report["drift_share"],
                "drift_share_threshold": report["drift_share_threshold"],
                "drifted_columns": list(report["drifted_columns"]),
            }
            events.append(_event(config, DRIFT_DETECTED, "partition", result.partition, drift))
        if factor is not None and expected and rate > factor * expected:
            exceeded = {**common, "flagged_rate": rate, "expected_flagged_rate": expected, "factor": factor}
            events.append(_event(config, FLAGGED_RATE_EXCEEDED, "partition", result.partition, exceeded))
        if volume is not None and volume.unusual:
            unusual = {**common, **volume.model_dump(mode="json", exclude={"partition"}), "reason": volume.describe()}
            events.append(_event(config, VOLUME_UNUSUAL, "partition", result.partition, unusual))
    return events


def freshness_events(config: PipelineConfig, freshness: FreshnessVerdict | None) -> list[EventRecord]:
    """`partition.missing` when periods between the first and the latest partition have none, `partition.late`
    when the next partition is overdue."""
    if freshness is None:
        return []
    common = {
        "lake": public_uri(config.lake.location),
        "output_uri": public_uri(config.output.uri),
        "expected_every": freshness.expected_every,
        "latest": freshness.latest,
    }
    events = []
    if freshness.n_missing:
        missing = {**common, "missing": freshness.missing, "n_missing": freshness.n_missing}
        events.append(_event(config, PARTITION_MISSING, "lake", None, missing))
    if freshness.late:
        late = {**common, "next_expected": freshness.next_expected, "due_by": _iso(freshness.due_by)}
        events.append(_event(config, PARTITION_LATE, "lake", None, late))
    return events


#: Longest error text a `partition.failed` event carries.
MAX_ERROR_CHARS = 500


def failure_events(
    config: PipelineConfig, failed: Sequence[FailedPartition], run_id: str | None = None
) -> list[EventRecord]:
    """`partition.failed` for each partition the run could not commit (error on one line, at most
    `MAX_ERROR_CHARS`)."""
    events = []
    for failure in failed:
        error = " ".join(failure.error.split())
        payload = {
            "partition": failure.partition,
            "error": error[:MAX_ERROR_CHARS],
            "output_uri": public_uri(config.output.uri),
            "run_id": run_id,
        }
        events.append(_event(config, PARTITION_FAILED, "partition", failure.partition, payload))
    return events


def training_events(config: PipelineConfig, *trainings: TrainingOutcome | None) -> list[EventRecord]:
    """`model.promoted` for each training of the run that promoted its new version."""
    events = []
    for training in trainings:
        if isinstance(training, ModelTrained) and training.promoted:
            payload = {
                "model_version": training.model_version,
                "previous": training.champion,
                "action": training.action,
                "reason": training.promotion_reason,
                "metrics": training.challenger_metrics,
                "output_uri": public_uri(config.output.uri),
            }
            events.append(_event(config, MODEL_PROMOTED, "model", training.model_version, payload))
    return events


def champion_moved_event(config: PipelineConfig, before: str | None, after: str | None, how: str) -> EventRecord:
    """`model.promoted` (`how` = promoted) or `model.rolled-back` after a `models promote` / `models rollback`."""
    name = MODEL_ROLLED_BACK if how == "rolled-back" else MODEL_PROMOTED
    payload = {
        "model_version": after,
        "previous": before,
        "action": how,
        "output_uri": public_uri(config.output.uri),
    }
    return _event(config, name, "model", after, payload)
