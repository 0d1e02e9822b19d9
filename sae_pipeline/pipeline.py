"""The pipeline's steps as plain functions: what each Prefect task in `flows/` calls.

Each step takes the config and small records (partition names and URIs, counts) and returns a small JSON-able
record; the data itself moves through the lake. That keeps orchestration thin, lets every step be tested and
rerun on its own, and means a step can run on another machine given only the config and the record.

Outputs (all under `output.uri`, each a sibling folder so no table holds foreign files):
`validated/` valid rows, `quarantine/` invalid rows with reasons, `scored/` the scored partitions,
`models/<version>/` the model artifact, `drift/<partition>/` drift reports, `runs/<run id>.json` run summaries.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from sae_pipeline import drift, lake
from sae_pipeline.config import PipelineConfig
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.registry import (
    ModelArtifact,
    ModelRegistry,
    PipelineModelMetadata,
    library_versions,
    load_model,
    new_model_version,
)
from sae_pipeline.schema import scored_output_schema, validate_frame
from sae_pipeline.scoring import score_frame

logger = logging.getLogger(__name__)

_SCORING_CHUNK = 100_000


def list_partitions(config: PipelineConfig) -> list[dict]:
    """Records of every partition of the input table, in key order."""
    partitions = lake.discover_partitions(config.lake.uri, list(config.lake.partition_keys))
    if not partitions:
        raise lake.LakeReadError(
            f"no partitions found under {config.lake.uri} (expected folders named "
            f"{'/'.join(f'{key}=...' for key in config.lake.partition_keys)})"
        )
    return [partition.to_record() for partition in partitions]


def validate_partition(config: PipelineConfig, partition: dict) -> dict:
    """Read one raw partition, write its valid rows and its quarantined rows, and return the counts."""
    name = partition["name"]
    frame = lake.read_partition(partition["uri"])
    outcome = validate_frame(frame, config, source=partition["uri"])
    output = config.output
    validated_uri = lake.write_partition(outcome.valid, output.validated_uri, name, output.staging_uri)
    quarantine_uri = lake.write_partition(outcome.quarantined, output.quarantine_uri, name, output.staging_uri)
    if outcome.quarantined.height:
        logger.info("%s: %d row(s) quarantined", name, outcome.quarantined.height)
    return {"partition": name, **outcome.counts, "validated_uri": validated_uri, "quarantine_uri": quarantine_uri}


def _training_frame(config: PipelineConfig, validated: list[dict]) -> tuple[pl.DataFrame, list[str]]:
    wanted = config.training.partitions
    chosen = [record for record in validated if wanted is None or record["partition"] in wanted]
    if wanted is not None:
        unknown = sorted(set(wanted) - {record["partition"] for record in validated})
        if unknown:
            raise ValueError(f"training.partitions names partitions that are not in the lake: {unknown}")
    frame = pl.concat([lake.read_partition(record["validated_uri"]) for record in chosen], how="vertical")
    if frame.height > config.training.max_rows:
        frame = frame.sample(config.training.max_rows, seed=config.model.seed)
    return frame, [record["partition"] for record in chosen]


def detector_from_config(config: PipelineConfig, progress: bool = False) -> SAEDetector:
    settings = config.model.model_dump()
    settings["random_state"] = settings.pop("seed")
    return SAEDetector(**settings, contamination=config.thresholds.target_fpr, verbose=progress)


def train_model(config: PipelineConfig, validated: list[dict], progress: bool = False) -> dict:
    """Fit features and the SAE on the training partitions' valid rows; save the artifact; return its record."""
    frame, trained_on = _training_frame(config, validated)
    if frame.height < 10:
        raise ValueError(f"only {frame.height} valid training rows in {trained_on}: need at least 10")
    encoder = TabularEncoder(config.columns, config.features).fit(frame)
    detector = detector_from_config(config, progress).fit(encoder.transform(frame))
    created_at = dt.datetime.now(dt.UTC)
    metadata = PipelineModelMetadata(
        model_version=new_model_version(created_at),
        created_at=created_at,
        config_name=config.name,
        trained_on=trained_on,
        training_rows=frame.height,
        target_fpr=config.thresholds.target_fpr,
        features=encoder.to_dict(),
        drift_reference=drift.build_reference(
            frame,
            [column.name for column in config.columns_with_role("numeric")],
            [column.name for column in config.columns_with_role("categorical")],
            scores=detector.validation_scores_,
        ),
        library_versions=library_versions(),
    )
    artifact = ModelArtifact(detector=detector, encoder=encoder, metadata=metadata)
    registry = ModelRegistry(config.output.models_uri)
    model_uri = registry.save(artifact)
    registry.promote(artifact.version, reason=f"trained by the pipeline with config {config.name}")
    logger.info("model %s trained on %d rows, saved to %s", artifact.version, frame.height, model_uri)
    return {
        "model_uri": model_uri,
        "model_version": artifact.version,
        "trained_on": trained_on,
        "training_rows": frame.height,
        "threshold": detector.threshold_,
        "training_report": detector.training_report_,
    }


@functools.lru_cache(maxsize=4)
def _load_model_once(model_uri: str) -> ModelArtifact:
    """Scoring tasks of one process share a loaded model; safe to cache because versions are never rewritten."""
    return load_model(model_uri)


def existing_model(config: PipelineConfig, model_uri: str | None = None) -> dict:
    """Record of an already-trained model: `model_uri`, or else the champion under the output folder."""
    if model_uri is None:
        registry = ModelRegistry(config.output.models_uri)
        model_uri = registry.uri(registry.resolve(ModelRegistry.CHAMPION))
    return {"model_uri": model_uri, "model_version": load_model(model_uri).version}


def score_partition(
    config: PipelineConfig, validated: dict, model_uri: str, scored_at: dt.datetime, progress: bool = False
) -> dict:
    """Score one partition's valid rows, write the scored partition and its drift report, return the counts."""
    name = validated["partition"]
    artifact = _load_model_once(model_uri)
    frame = lake.read_partition(validated["validated_uri"])
    chunks = range(0, max(frame.height, 1), _SCORING_CHUNK)
    scored = pl.concat(
        [
            score_frame(frame.slice(start, _SCORING_CHUNK), artifact, config.scoring.top_features, scored_at)
            for start in tqdm(chunks, desc=f"scoring {name}", unit="chunk", disable=None if progress else True, leave=False)
        ],
        how="vertical",
    )
    scored_output_schema(config).validate(scored)
    scored_uri = lake.write_partition(scored, config.output.scored_uri, name, config.output.staging_uri)

    report = drift.compare_to_reference(
        artifact.metadata.drift_reference,
        frame,
        scores=scored.get_column("anomaly_score").to_numpy(),
        flagged=scored.get_column("is_anomaly").to_numpy(),
        expected_anomaly_rate=artifact.metadata.target_fpr,
        partition=name,
    )
    report_uri = lake.join_uri(config.output.drift_uri, name)
    lake.write_json(lake.join_uri(report_uri, "drift.json"), report)
    lake.write_text(lake.join_uri(report_uri, "drift.md"), drift.render_markdown(report))
    return {
        "partition": name,
        "rows_scored": scored.height,
        "rows_flagged": int(scored.get_column("is_anomaly").sum()),
        "scored_uri": scored_uri,
        "drift_report_uri": lake.join_uri(report_uri, "drift.md"),
        "drift_status": report["overall_status"],
        "drifted_columns": report["drifted_columns"],
    }


def read_scored_labels(config: PipelineConfig, scored: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Labels, scores and flags of the scored partitions, if the config names a label column."""
    label = config.label_column
    if label is None or not scored:
        return None
    columns = pl.concat(
        [lake.read_partition(record["scored_uri"]).select(label, "anomaly_score", "is_anomaly") for record in scored]
    )
    return (
        columns.get_column(label).fill_null(False).cast(pl.Boolean).to_numpy(),
        columns.get_column("anomaly_score").to_numpy(),
        columns.get_column("is_anomaly").to_numpy(),
    )
