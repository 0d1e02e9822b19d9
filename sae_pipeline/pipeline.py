"""The pipeline's steps as plain functions: what each Prefect task in `flows/` calls.

Each step takes the config and small records (partition names, URIs, fingerprints, counts) and returns a small
JSON-able record; the data itself moves through the lake. That keeps orchestration thin, lets every step be tested
and rerun on its own, and means a step can run on another machine given only the config and the record.

A scoring run reads each raw partition it has to process once, validates it, writes its quarantined rows, its
scored rows and its drift report, and commits a ledger entry last. Outputs (all under `output.uri`, each a sibling
folder so no table holds foreign files): `scored/`, `quarantine/`, `drift/<partition>/`, `ledger/`, `models/`
(the registry), `runs/<run id>.json`.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from sae_pipeline import drift, lake
from sae_pipeline.config import PipelineConfig
from sae_pipeline.ledger import Ledger, LedgerEntry
from sae_pipeline.planning import plan_scoring, select_partitions
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.schema import scored_output_schema, validate_frame
from sae_pipeline.scoring import score_frame
from sae_pipeline.updating import unknown_model_columns

logger = logging.getLogger(__name__)

_SCORING_CHUNK = 100_000


def list_partitions(config: PipelineConfig) -> list[dict]:
    """Records of every partition of the input table, in key order, each with the fingerprint of its files."""
    partitions = lake.discover_partitions(config.lake.uri, list(config.lake.partition_keys))
    if not partitions:
        raise lake.LakeReadError(
            f"no partitions found under {config.lake.uri} (expected folders named "
            f"{'/'.join(f'{key}=...' for key in config.lake.partition_keys)})"
        )
    return [{**partition.to_record(), "fingerprint": lake.partition_fingerprint(partition.uri)} for partition in partitions]


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
    selected = select_partitions(requested, [record["name"] for record in partitions])
    committed = {name: (entry.fingerprint, entry.model_version) for name, entry in Ledger(config.output.ledger_uri).entries().items()}
    plan = plan_scoring(
        {record["name"]: record["fingerprint"] for record in partitions}, committed, model_version, selected, backfill, rescore
    )
    return plan.to_record()


def remove_partition_outputs(config: PipelineConfig, name: str) -> None:
    """Delete every output of a partition that left the lake, ledger entry last (so a crash retries the removal)."""
    output = config.output
    for table in (output.scored_uri, output.quarantine_uri, output.drift_uri):
        lake.delete_partition(table, name)
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
) -> dict:
    """Read one raw partition once, write its quarantined rows, scored rows and drift report, commit its ledger
    entry, and return the counts. Safe to rerun: every write replaces the partition's previous output."""
    name, output = partition["name"], config.output
    artifact = ModelRegistry(output.models_uri).load(model_version)
    frame = lake.read_partition(partition["uri"])
    outcome = validate_frame(frame, config, source=partition["uri"])
    quarantine_uri = lake.write_partition(outcome.quarantined, output.quarantine_uri, name, output.staging_uri)
    if outcome.quarantined.height:
        logger.info("%s: %d row(s) quarantined", name, outcome.quarantined.height)

    valid = outcome.valid
    chunks = range(0, max(valid.height, 1), _SCORING_CHUNK)
    scored = pl.concat(
        [
            score_frame(valid.slice(start, _SCORING_CHUNK), artifact, config.scoring.top_features, scored_at)
            for start in tqdm(chunks, desc=f"scoring {name}", unit="chunk", disable=None if progress else True, leave=False)
        ],
        how="vertical",
    )
    scored_output_schema(config).validate(scored)
    scored_uri = lake.write_partition(scored, output.scored_uri, name, output.staging_uri)

    report = drift.compare_to_reference(
        artifact.metadata.drift_reference,
        valid,
        scores=scored.get_column("anomaly_score").to_numpy(),
        flagged=scored.get_column("is_anomaly").to_numpy(),
        expected_anomaly_rate=artifact.metadata.target_fpr,
        partition=name,
    )
    report_uri = lake.join_uri(output.drift_uri, name)
    lake.write_json(lake.join_uri(report_uri, "drift.json"), report)
    lake.write_text(lake.join_uri(report_uri, "drift.md"), drift.render_markdown(report))

    record = {
        "partition": name,
        "reason": reason,
        "model_version": artifact.version,
        **outcome.counts,
        "rows_scored": scored.height,
        "rows_flagged": int(scored.get_column("is_anomaly").sum()),
        "scored_uri": scored_uri,
        "quarantine_uri": quarantine_uri,
        "drift_report_uri": lake.join_uri(report_uri, "drift.md"),
        "drift_status": report["overall_status"],
        "drifted_columns": report["drifted_columns"],
    }
    Ledger(output.ledger_uri).commit(
        LedgerEntry(
            partition=name,
            fingerprint=partition["fingerprint"],
            model_version=artifact.version,
            rows_in=record["rows_in"],
            rows_quarantined=record["rows_quarantined"],
            rows_scored=record["rows_scored"],
            rows_flagged=record["rows_flagged"],
            outputs={"scored": scored_uri, "quarantine": quarantine_uri, "drift": report_uri},
            run_id=run_id,
            reason=reason,
            committed_at=dt.datetime.now(dt.UTC),
        )
    )
    return record


def read_scored_labels(config: PipelineConfig, scored: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Labels, scores and flags of the scored partitions, if the config names a label column (evaluation runs only:
    it reads those three columns back)."""
    label = config.label_column
    if label is None or not scored:
        return None
    columns = pl.concat(
        [lake.read_partition(record["scored_uri"], columns=[label, "anomaly_score", "is_anomaly"]) for record in scored]
    )
    return (
        columns.get_column(label).fill_null(False).cast(pl.Boolean).to_numpy(),
        columns.get_column("anomaly_score").to_numpy(),
        columns.get_column("is_anomaly").to_numpy(),
    )
