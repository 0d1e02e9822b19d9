"""The pipeline's steps as plain functions: what each Prefect task in `flows/` calls.

Each step takes the config and small records (partition names, URIs, fingerprints, counts) and returns a small
JSON-able record; the data itself moves through the lake. That keeps orchestration thin, lets every step be tested
and rerun on its own, and means a step can run on another machine given only the config and the record.

A scoring run streams each raw partition it has to process once, batch by batch, validates it, writes its
quarantined rows, its scored rows and its drift report, and commits a ledger entry last. Outputs (all under `output.uri`, each a sibling
folder so no table holds foreign files): `scored/`, `quarantine/`, `drift/<partition>/`, `ledger/`, `models/`
(the registry), `runs/<run id>.json`.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from sae_pipeline import drift, hive, lease, parquet_io, storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.ledger import Ledger, LedgerEntry
from sae_pipeline.overlap import BackgroundWriter, prefetched
from sae_pipeline.planning import plan_scoring, select_partitions
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.schema import (
    QUARANTINE_REASON_COLUMN,
    quarantine_arrow_schema,
    scored_arrow_schema,
    scored_output_schema,
    validate_frame,
)
from sae_pipeline.scoring import score_frame
from sae_pipeline.updating import unknown_model_columns

logger = logging.getLogger(__name__)

def list_partitions(config: PipelineConfig) -> list[dict]:
    """Records of every partition of the input table, in key order, each with the fingerprint of its files.

    A partition whose key values do not parse as their declared type, are empty or null, or could escape the table
    comes back with an `error` (naming its folder) and no fingerprint: nothing reads it (see `split_refused`)."""
    partitions = hive.discover_partitions(config.lake.uri, list(config.lake.partition_keys))
    if not partitions:
        raise storage.LakeReadError(
            f"no partitions found under {config.lake.uri} (expected folders named "
            f"{'/'.join(f'{key}=...' for key in config.lake.partition_keys)})"
        )
    key_types = dict(config.lake.partition_keys)
    records = []
    for partition in partitions:
        error = hive.partition_error(partition, key_types)
        if error is not None:  # refused without reading it: the run reports it as a failed partition
            logger.warning("%s", error)
            records.append({**partition.to_record(), "fingerprint": None, "error": error})
        else:
            records.append({**partition.to_record(), "fingerprint": hive.partition_fingerprint(partition.uri)})
    return records


def split_refused(partitions: list[dict]) -> tuple[list[dict], list[dict]]:
    """(usable partition records, failures `{partition, error}` for those whose key values were refused)."""
    usable = [record for record in partitions if not record.get("error")]
    refused = [{"partition": record["name"], "error": record["error"]} for record in partitions if record.get("error")]
    return usable, refused


def clear_staging(config: PipelineConfig, run_started_at: dt.datetime) -> None:
    """Remove what crashed writers left: staged files on disk, incomplete uploads on S3. Call it while holding the
    run lease, before this run writes. Every upload begun before the run started is aborted, however recent: under
    the lease its writer is dead, or has lost the lease and must not complete over this run's outputs (an age rule
    would let exactly that writer through). A store that refuses to list uploads only costs a warning: the uploads
    stay invisible to readers, and a bucket lifecycle rule can expire them."""
    storage.clear_folder(config.output.staging_uri)
    try:
        aborted = storage.abort_incomplete_uploads(config.output.uri, initiated_before=run_started_at)
    except PermissionError as error:
        logger.warning("incomplete uploads of crashed writers were not cleaned up: %s", error)
        return
    if aborted:
        logger.info("aborted %d incomplete upload(s) of crashed writers under %s", aborted, config.output.uri)


def scoring_model(config: PipelineConfig, model: str | None = None) -> dict:
    """The model a scoring run uses (`model`: a version, prefix or alias; default the champion), checked against
    the configured columns before any partition is read."""
    registry = ModelRegistry(config.output.models_uri)
    artifact = registry.load(model or ModelRegistry.CHAMPION)
    return {
        "model_version": artifact.version,
        "model_uri": registry.uri(artifact.version),
        "unknown_columns": unknown_model_columns(artifact, config),
    }


def plan_run(
    config: PipelineConfig,
    partitions: list[dict],
    model_version: str,
    requested: list[str] | None = None,
    backfill: bool = False,
    rescore: bool = False,
) -> dict:
    """Which partitions to score and why, which are up to date, which left the lake (see `planning`)."""
    partitions, refused = split_refused(partitions)
    refused_names = {failure["partition"] for failure in refused}  # still in the lake: never "removed"
    selected = select_partitions(requested, [record["name"] for record in partitions])
    committed = {
        name: (entry.fingerprint, entry.model_version)
        for name, entry in Ledger(config.output.ledger_uri).entries().items()
        if name not in refused_names
    }
    plan = plan_scoring(
        {record["name"]: record["fingerprint"] for record in partitions}, committed, model_version, selected, backfill, rescore
    )
    return plan.to_record()


def remove_partition_outputs(config: PipelineConfig, name: str) -> None:
    """Delete every output of a partition that left the lake, ledger entry last (so a crash retries the removal)."""
    output = config.output
    for table in (output.scored_uri, output.quarantine_uri, output.drift_uri):
        hive.delete_partition(table, name)
    Ledger(output.ledger_uri).remove(name)
    logger.info("%s left the lake: its outputs were removed", name)


def score_partition(
    config: PipelineConfig,
    partition: dict,
    model_version: str,
    run_id: str,
    scored_at: dt.datetime,
    reason: str = "new",
    progress: bool = False,
    lease_token: str | None = None,
) -> dict:
    """Stream one raw partition once, batch by batch: validate, write quarantined and scored rows, accumulate drift;
    then commit the outputs, the drift report and, last, the ledger entry. Memory does not grow with the partition.
    Safe to rerun: every write replaces the partition's previous output. With `lease_token` (the run lease's), each
    commit first confirms that the run still holds the output folder (`lease.confirm_holder`)."""
    name, output = partition["name"], config.output

    def confirm_lease(what: str) -> None:
        if lease_token is not None:
            lease.confirm_holder(output.lease_uri, lease_token, f"{name}: {what}")

    artifact = ModelRegistry(output.models_uri).load(model_version)
    quarantine = BackgroundWriter(
        parquet_io.PartitionWriter(output.quarantine_uri, name, output.staging_uri, quarantine_arrow_schema(config))
    )
    scored = BackgroundWriter(
        parquet_io.PartitionWriter(output.scored_uri, name, output.staging_uri, scored_arrow_schema(config))
    )
    accumulator = drift.DriftAccumulator(artifact.metadata.drift_reference, config.drift)
    counts = {"rows_in": 0, "rows_valid": 0, "rows_quarantined": 0, "rows_scored": 0, "rows_flagged": 0}
    reasons: dict[str, int] = {}
    ignored: set[str] = set()  # columns of the files that the config does not name: left out of the outputs
    contract = scored_output_schema(config)
    batches = prefetched(parquet_io.iter_partition_batches(partition["uri"], config.scoring.batch_rows))
    try:
        for source, batch in tqdm(batches, desc=f"scoring {name}", unit="batch", disable=None if progress else True, leave=False):
            ignored.update(set(batch.schema.names) - set(contract.columns))
            outcome = validate_frame(pl.from_arrow(batch), config, source=source)
            quarantine.write(outcome.quarantined.to_arrow())
            for reason_text, count in _reason_counts(outcome.quarantined).items():
                reasons[reason_text] = reasons.get(reason_text, 0) + count
            counts["rows_in"] += batch.num_rows
            counts["rows_quarantined"] += outcome.quarantined.height
            if outcome.valid.is_empty():  # every row of this batch was quarantined: nothing to score
                continue
            result = score_frame(outcome.valid, artifact, config.scoring.top_features, scored_at)
            if counts["rows_scored"] == 0:
                contract.validate(result.frame.head(1000))
            scored.write(result.frame.to_arrow())
            accumulator.update(outcome.valid, scores=result.scores, flagged=result.flagged, codes=result.codes)
            counts["rows_valid"] += outcome.valid.height
            counts["rows_scored"] += result.frame.height
            counts["rows_flagged"] += int(result.flagged.sum())
        confirm_lease("quarantined and scored rows")
    except BaseException:
        quarantine.abort()
        scored.abort()
        raise
    if counts["rows_quarantined"]:
        logger.info("%s: %d row(s) quarantined", name, counts["rows_quarantined"])
    quarantine_uri = quarantine.commit()
    too_many = quarantine_share_error(config, partition, counts, reasons)
    if too_many is not None:  # the quarantined rows are kept; no scored output and no ledger entry: retried next run
        scored.abort()
        hive.delete_partition(output.scored_uri, name)
        raise too_many
    scored_uri = scored.commit()

    report = accumulator.report(
        partition=name,
        quarantined_rows=counts["rows_quarantined"],
        quarantine_reasons=reasons,
        expected_anomaly_rate=artifact.metadata.target_fpr,
    )
    report_uri = storage.join_uri(output.drift_uri, name)
    html_uri = storage.join_uri(report_uri, "report.html")
    storage.write_json(storage.join_uri(report_uri, "report.json"), report)
    storage.write_text(html_uri, drift.render_html(report))
    storage.write_text(storage.join_uri(report_uri, "report.md"), drift.render_markdown(report, html_uri))
    wants_training, policy_reason = drift.policy_wants_training(report, config.drift.policy)

    record = {
        "partition": name,
        "reason": reason,
        "model_version": artifact.version,
        **counts,
        "scored_uri": scored_uri,
        "quarantine_uri": quarantine_uri,
        "drift_report_uri": html_uri,
        "drift_markdown_uri": storage.join_uri(report_uri, "report.md"),
        "drift_status": report["overall_status"],
        "drifted_columns": report["drifted_columns"],
        "drift_wants_training": wants_training,
        "drift_policy_reason": policy_reason,
        "ignored_columns": sorted(ignored),
    }
    confirm_lease("ledger entry")
    Ledger(output.ledger_uri).commit(
        LedgerEntry(
            partition=name,
            fingerprint=partition["fingerprint"],
            model_version=artifact.version,
            rows_in=counts["rows_in"],
            rows_quarantined=counts["rows_quarantined"],
            rows_scored=counts["rows_scored"],
            rows_flagged=counts["rows_flagged"],
            outputs={"scored": scored_uri, "quarantine": quarantine_uri, "drift": report_uri},
            run_id=run_id,
            reason=reason,
            committed_at=dt.datetime.now(dt.UTC),
        )
    )
    return record


class QuarantineShareError(ValueError):
    """Too large a share of a partition's rows was quarantined: the partition fails instead of passing as "ok"."""


def quarantine_share_error(config: PipelineConfig, partition: dict, counts: dict, reasons: dict[str, int]) -> QuarantineShareError | None:
    """The error for a partition whose quarantined share reaches `scoring.max_quarantine_share`, else None."""
    limit = config.scoring.max_quarantine_share
    if not counts["rows_in"] or counts["rows_quarantined"] / counts["rows_in"] < limit:
        return None
    common = ", ".join(f"{reason} ({count})" for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:3])
    return QuarantineShareError(
        f"{partition['uri']}: {counts['rows_quarantined']} of {counts['rows_in']} rows quarantined, at least the "
        f"allowed share {limit:g} (rule: scoring.max_quarantine_share); most common: {common}; quarantined rows are in "
        f"{storage.join_uri(config.output.quarantine_uri, partition['name'])}"
    )


def _reason_counts(quarantined: pl.DataFrame) -> dict[str, int]:
    """How many quarantined rows broke each `column: rule`."""
    if not quarantined.height:
        return {}
    counted = quarantined.get_column(QUARANTINE_REASON_COLUMN).explode().value_counts()
    return dict(zip(counted.get_column(QUARANTINE_REASON_COLUMN).to_list(), counted.get_column("count").to_list()))


def write_drift_trend(config: PipelineConfig) -> str:
    """Rewrite the lake-level trend page `drift/index.html` from every partition's `report.json`; return its URI."""
    reports = [storage.read_json(uri) for uri in storage.list_files(config.output.drift_uri, "report.json")]
    uri = storage.join_uri(config.output.drift_uri, "index.html")
    storage.write_text(uri, drift.render_trend(reports))
    return uri


def read_scored_labels(config: PipelineConfig, scored: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Labels, scores and flags of the scored partitions, if the config names a label column (evaluation runs only:
    it reads those three columns back)."""
    label = config.label_column
    if label is None or not scored:
        return None
    columns = pl.concat(
        [
            parquet_io.read_partition(record["scored_uri"], columns=[label, "anomaly_score", "is_anomaly"])
            for record in scored
        ]
    )
    return (
        columns.get_column(label).fill_null(False).cast(pl.Boolean).to_numpy(),
        columns.get_column("anomaly_score").to_numpy(),
        columns.get_column("is_anomaly").to_numpy(),
    )
