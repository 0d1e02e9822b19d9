"""Train or update: keep one model that follows the data, without piling up models or forgetting old behaviour.

`decide_training` looks at the champion, the newest version and the training partitions' fingerprints and says
whether to train from scratch, fine-tune the champion on what is new, or do nothing. `train_or_update` carries the
decision out, saves a new immutable version and promotes it only if it is no worse than the champion on the same
held-out recent rows (see `PromotionConfig`): never further from the target false-positive rate. Each version's
threshold is calibrated on every row it never trained on, those held-out rows included (`_artifact`), which states
the band its flagged rate stays in (`sae_pipeline.thresholds.fpr_band`). Every decision comes back as a small
record with its numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from sae_pipeline import drift
from sae_pipeline.config import MODEL_ROLES, PipelineConfig
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.incidents.reviews import confirmed_anomaly_keys
from sae_pipeline.incidents.training import reviewed_normal_rows, without_confirmed_anomalies
from sae_pipeline.records import ModelTrained, PartitionRecord, TrainingOutcome, TrainingSkipped
from sae_pipeline.registry import (
    ModelArtifact,
    ModelRegistry,
    PipelineModelMetadata,
    library_versions,
    new_model_version,
)
from sae_pipeline.sampling import RowSample, sample_valid_rows
from sae_pipeline.thresholds import flagged_leaving_one_out, fpr_band

logger = logging.getLogger(__name__)

#: Scores above this quantile are left out of the mean score used to compare models (they are the anomalies).
_COMPARISON_TRIM_QUANTILE = 0.95
_MAX_EVALUATION_ROWS = 20_000
_MIN_TRAINING_ROWS = 10
#: Rows whose sparse codes summarise latent usage in the drift reference.
_MAX_REFERENCE_CODE_ROWS = 50_000


class ModelSchemaError(ValueError):
    """The champion cannot read the configured columns (a model column gone or retyped): retrain."""


@dataclass
class TrainingDecision:
    action: str  # "train", "update" or "skip"
    reason: str
    partitions: list[str] = field(default_factory=list)


def detector_from_config(config: PipelineConfig, progress: bool = False) -> SAEDetector:
    """An unfitted detector with the config's `model` section and `thresholds.target_fpr` as its contamination."""
    return SAEDetector(**config.model.detector_params(), contamination=config.thresholds.target_fpr, verbose=progress)


def unknown_model_columns(artifact: ModelArtifact, config: PipelineConfig) -> list[str]:
    """Configured model columns the artifact was not trained on (it ignores them); raises `ModelSchemaError` when
    a column the artifact needs is no longer configured with the same type and role."""
    configured = {column.name: column for column in config.columns_with_role(*MODEL_ROLES)}
    needed = [column for column in artifact.encoder.columns if column.role in MODEL_ROLES]
    for column in needed:
        now = configured.get(column.name)
        if now is None or (now.type, now.role) != (column.type, column.role):
            change = "is no longer a model column" if now is None else f"is now {now.type} ({now.role})"
            raise ModelSchemaError(
                f"model {artifact.version} was trained on column {column.name!r} ({column.type}, {column.role}), "
                f"which {change} in config {config.name!r}: train a new model with --retrain"
            )
    return sorted(set(configured) - {column.name for column in needed})


def training_partitions(config: PipelineConfig, partitions: list[PartitionRecord]) -> list[PartitionRecord]:
    """The partition records the model may learn from (`training.partitions`, else all)."""
    wanted = config.training.partitions
    if wanted is None:
        return partitions
    unknown = sorted(set(wanted) - {record.name for record in partitions})
    if unknown:
        raise ValueError(f"training.partitions names partitions that are not in the lake: {unknown}")
    return [record for record in partitions if record.name in wanted]


def decide_training(
    config: PipelineConfig,
    registry: ModelRegistry,
    partitions: list[PartitionRecord],
    retrain: bool = False,
    drifted: list[str] = (),
) -> TrainingDecision:
    """Train when asked, when there is no champion or the model settings changed; update when training
    partitions are new or changed since the newest version with these settings; otherwise skip.

    `drifted` partitions (named by the drift policy) may be learned from even if `training.partitions` leaves
    them out: the model follows the data it is asked to score."""
    eligible = training_partitions(config, partitions)
    eligible += [record for record in partitions if record.name in drifted and record not in eligible]
    names = [record.name for record in eligible]
    if retrain:
        return TrainingDecision("train", "retrain requested", names)
    champion = registry.champion()
    if champion is None:
        return TrainingDecision("train", "no champion model yet", names)
    settings = config.model_hash()
    recorded = (registry.metadata(info.version) for info in registry.versions())  # newest first, read lazily
    newest = next((meta for meta in recorded if meta.config_hash == settings), None)
    if newest is None:
        return TrainingDecision("train", f"model settings changed since champion {champion}", names)
    unseen = [record.name for record in eligible if newest.data_fingerprints.get(record.name) != record.fingerprint]
    if not unseen:
        return TrainingDecision("skip", f"no new or changed training data since version {newest.model_version}")
    champion_meta = registry.metadata(champion)
    if champion_meta.config_hash != settings:
        return TrainingDecision("train", f"model settings changed since champion {champion}", names)
    new = [record.name for record in eligible if champion_meta.data_fingerprints.get(record.name) != record.fingerprint]
    if not new:
        return TrainingDecision("skip", f"champion {champion} has seen every training partition")
    return TrainingDecision("update", f"{len(new)} new or changed training partition(s) since champion {champion}", new)


def _split_evaluation(frame: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows to learn from, held-out rows on which the new version and the champion are compared)."""
    n_eval = min(_MAX_EVALUATION_ROWS, int(round(fraction * frame.height)))
    order = np.random.default_rng(seed).permutation(frame.height)
    return frame[order[n_eval:]], frame[order[:n_eval]]


def evaluation_metrics(artifact: ModelArtifact, frame: pl.DataFrame, calibrated_on: bool = False) -> dict[str, float]:
    """Trimmed mean anomaly score and flagged rate of a model on held-out rows (`calibrated_on`: rows that are
    among its calibration rows, each then judged by the threshold of the others)."""
    encoded = artifact.encoder.encode(frame)
    return _metrics(artifact, artifact.detector.decision_function(encoded.matrix, encoded.missing), calibrated_on)


def _metrics(artifact: ModelArtifact, scores: np.ndarray, calibrated_on: bool) -> dict[str, float]:
    """The comparison numbers, and the band (`fpr_band`) the model's threshold guarantees on rows like the rows it
    was calibrated on."""
    detector = artifact.detector
    kept = scores[scores <= np.quantile(scores, _COMPARISON_TRIM_QUANTILE)]
    band = fpr_band(detector.validation_scores_.size, detector.contamination)
    if calibrated_on:
        flagged = flagged_leaving_one_out(detector.validation_scores_, scores, detector.contamination)
    else:
        flagged = scores > detector.threshold_
    return {
        "trimmed_mean_score": float(kept.mean()),
        "flagged_rate": float(flagged.mean()),
        "threshold": float(artifact.detector.threshold_),
        "evaluation_rows": float(scores.size),
        "calibration_rows": float(band.n_calibration),
        "expected_fpr_low": band.low,
        "expected_fpr_high": band.high,
    }


def promotion_decision(config: PipelineConfig, challenger: dict, champion: dict | None) -> tuple[bool, str]:
    """Apply the promotion policy to the two models' metrics on the same rows."""
    policy = config.registry.promotion
    if policy.policy == "manual":
        return False, "promotion policy is manual"
    if champion is None or policy.policy == "always":
        return True, "no comparable champion" if champion is None else "promotion policy is always"
    target = config.thresholds.target_fpr
    score_ok = challenger["trimmed_mean_score"] <= champion["trimmed_mean_score"] * (1 + policy.score_tolerance)
    # Both rates are counts over the same rows: 1e-12 only keeps equal distances (2/600 and 4/600 around 3/600) equal.
    rate_ok = (
        abs(challenger["flagged_rate"] - target)
        <= abs(champion["flagged_rate"] - target) + policy.flagged_rate_tolerance + 1e-12
    )
    numbers = (
        f"score {challenger['trimmed_mean_score']:.4g} vs champion {champion['trimmed_mean_score']:.4g}, "
        f"flagged {challenger['flagged_rate']:.2%} vs {champion['flagged_rate']:.2%} (target {target:.2%})"
    )
    if score_ok and rate_ok:
        return True, f"no worse than the champion: {numbers}"
    return False, f"worse than the champion ({'flagged rate' if score_ok else 'anomaly score'}): {numbers}"


def train_or_update(
    config: PipelineConfig,
    partitions: list[PartitionRecord],
    retrain: bool = False,
    progress: bool = False,
    drifted: list[str] = (),
) -> TrainingOutcome:
    """Carry out `decide_training` and return what happened (see `RunSummary.training`)."""
    registry = ModelRegistry(config.output.models_uri)
    decision = decide_training(config, registry, partitions, retrain, drifted)
    champion_version = registry.champion()
    if decision.action == "skip":
        logger.info("no training: %s", decision.reason)
        return TrainingSkipped(reason=decision.reason, champion=champion_version)
    confirmed = confirmed_anomaly_keys(config)  # reviewed anomalies: never learned as normal
    sample = sample_valid_rows(
        config,
        [p for p in partitions if p.name in decision.partitions],
        config.training.max_rows,
        config.model.seed,
        excluded=confirmed,
    )
    chosen = [p for p in partitions if p.name in sample.partitions]
    champion = registry.load(champion_version) if champion_version else None
    # Rows are held out for a comparison only when there is a champion to compare with.
    fraction = config.training.evaluation_fraction if champion is not None else 0.0
    learn, held_out = _split_evaluation(sample.frame, fraction, config.model.seed)
    if learn.height < _MIN_TRAINING_ROWS:
        shortage = _shortage_reason(learn.height, sample)
        if decision.action == "update":  # the champion stays; the next run tries these partitions again
            return TrainingSkipped(reason=shortage, champion=champion_version, skipped_partitions=sample.failed)
        raise ValueError(shortage)

    started = dt.datetime.now(dt.UTC)
    if decision.action == "update":
        artifact = _updated(config, champion, learn, held_out, chosen, progress, confirmed)
    else:
        artifact = _trained(config, learn, held_out, chosen, progress)
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    champion_metrics, promoted, why = _judge(config, artifact, champion, held_out)
    model_uri, removed = _register(config, registry, artifact, promoted, why)
    logger.info("%s model %s (%s); %s", decision.action, artifact.version, decision.reason, why)
    return ModelTrained(
        action=decision.action,
        reason=decision.reason,
        champion=champion_version,
        model_version=artifact.version,
        model_uri=model_uri,
        parent_version=artifact.metadata.parent_version,
        trained_on=sample.partitions,
        skipped_partitions=sample.failed,
        training_rows=artifact.metadata.training_rows,
        rows_read=sample.rows_read,
        seconds=seconds,
        promoted=promoted,
        promotion_reason=why,
        challenger_metrics=artifact.metadata.validation_metrics,
        champion_metrics=champion_metrics,
        retired_versions=removed,
        threshold=float(artifact.detector.threshold_),
        training_report=artifact.detector.training_report_,
        rows_excluded_by_review=sample.rows_excluded,
    )


def _shortage_reason(rows: int, sample: RowSample) -> str:
    """Why there are too few training rows. When every failed partition failed for the same reason (a column
    type wrong in every file, say), that root cause leads, once, instead of one copy per partition."""
    causes = {failure.error.split(": ", 1)[-1] for failure in sample.failed}
    if len(sample.failed) > 1 and len(causes) == 1:
        first = sample.failed[0]
        return (
            f"{causes.pop()}, in all {len(sample.failed)} training partitions (e.g. {first.partition}: "
            f"{first.error.split(': ', 1)[0]}): only {rows} valid training rows, need at least {_MIN_TRAINING_ROWS}"
        )
    failures = "".join(f"; {failure.partition}: {failure.error}" for failure in sample.failed)
    return f"only {rows} valid training rows in {sample.partitions}: need at least {_MIN_TRAINING_ROWS}{failures}"


def _judge(
    config: PipelineConfig, artifact: ModelArtifact, champion: ModelArtifact | None, held_out: pl.DataFrame
) -> tuple[dict | None, bool, str]:
    """Record the new version's validation metrics and apply the promotion policy: against the champion on the
    same held-out rows when their scores compare, else on the version's own calibration rows. The held-out rows
    are among the new version's calibration rows (`_artifact`), so its flags there are left-one-out: out of
    sample, as the champion's are. Returns (the champion's metrics or None, promoted, why)."""
    champion_metrics = _comparable_metrics(config, champion, held_out)
    if champion_metrics is None:
        artifact.metadata.validation_metrics = _metrics(artifact, artifact.detector.validation_scores_, True)
    else:
        artifact.metadata.validation_metrics = evaluation_metrics(artifact, held_out, calibrated_on=True)
    promoted, why = promotion_decision(config, artifact.metadata.validation_metrics, champion_metrics)
    if promoted and champion is not None and config.registry.promotion.policy == "no_worse":
        refusal = reviewed_normal_refusal(artifact, champion, reviewed_normal_rows(config))
        if refusal is not None:
            promoted, why = False, refusal
    return champion_metrics, promoted, why


def reviewed_normal_refusal(challenger: ModelArtifact, champion: ModelArtifact, rows: pl.DataFrame) -> str | None:
    """Why `challenger` may not replace `champion`: it flags more of the rows reviewers marked `normal` (None when
    it flags no more, or when either model cannot read the rows: columns it needs are not recorded with them)."""
    if not rows.height:
        return None
    counts = []
    for artifact in (challenger, champion):
        if not set(artifact.encoder.input_columns) <= set(rows.columns):
            return None
        encoded = artifact.encoder.encode(rows)
        flags = artifact.detector.decision_function(encoded.matrix, encoded.missing) > artifact.detector.threshold_
        counts.append(int(flags.sum()))
    if counts[0] <= counts[1]:
        return None
    return (
        f"flags more rows reviewed normal than the champion: {counts[0]} vs {counts[1]} of {rows.height} "
        "(sae-pipeline review)"
    )


def _register(
    config: PipelineConfig, registry: ModelRegistry, artifact: ModelArtifact, promoted: bool, why: str
) -> tuple[str, list[str]]:
    """Save the new version, promote it if it earned it, apply retention; return (its URI, retired versions)."""
    model_uri = registry.save(artifact)
    if promoted:
        registry.promote(artifact.version, reason=why)
    return model_uri, registry.apply_retention(config.registry.keep_versions)


def _comparable_metrics(config: PipelineConfig, champion: ModelArtifact | None, held_out: pl.DataFrame) -> dict | None:
    """The champion's metrics on the held-out rows, or None when they do not compare: it cannot read them (schema
    changed), or it was trained with other model settings, whose scores are on another scale (e.g. another
    density_weight), so the settings the user chose take over."""
    if champion is None or not held_out.height or champion.metadata.config_hash != config.model_hash():
        return None
    try:
        unknown_model_columns(champion, config)
    except ModelSchemaError:
        return None
    return evaluation_metrics(champion, held_out)


def _fingerprints(partitions: list[PartitionRecord]) -> dict[str, str]:
    return {record.name: record.fingerprint for record in partitions}


def _replay(config: PipelineConfig, frame: pl.DataFrame) -> pl.DataFrame:
    """The bounded sample of training rows kept with a model, replayed by its later updates."""
    n_rows = min(config.training.replay_rows, frame.height)
    return frame.sample(n_rows, seed=config.model.seed)


def _artifact(
    config: PipelineConfig,
    encoder: TabularEncoder,
    detector: SAEDetector,
    frame: pl.DataFrame,
    held_out: pl.DataFrame,
    replay: pl.DataFrame,
    **lineage,
) -> ModelArtifact:
    """A new version of `detector`, trained on `frame`. Its threshold is calibrated on every row it never trained
    on: its validation split plus the `held_out` rows, the newest ones (more rows, a narrower band; recent rows, a
    threshold for the data scored next). The drift reference then holds the same scores and threshold."""
    if held_out.height:
        encoded = encoder.encode(held_out)
        detector.add_calibration_rows(encoded.matrix, encoded.missing)
    created_at = dt.datetime.now(dt.UTC)
    metadata = PipelineModelMetadata(
        model_version=new_model_version(created_at),
        created_at=created_at,
        config_name=config.name,
        training_rows=frame.height,
        target_fpr=config.thresholds.target_fpr,
        features=encoder.to_dict(),
        drift_reference=_drift_reference(config, encoder, detector, frame),
        library_versions=library_versions(),
        config_hash=config.model_hash(),
        **lineage,
    )
    return ModelArtifact(detector=detector, encoder=encoder, metadata=metadata, replay=replay)


def _drift_reference(
    config: PipelineConfig, encoder: TabularEncoder, detector: SAEDetector, frame: pl.DataFrame
) -> dict:
    """The stored summary later partitions are compared with: columns, validation scores and latent usage."""
    sample = frame.sample(min(frame.height, _MAX_REFERENCE_CODE_ROWS), seed=config.model.seed)
    return drift.build_reference(
        frame,
        encoder.numeric_columns,
        encoder.categorical_columns,
        scores=detector.validation_scores_,
        codes=detector.transform(encoder.transform(sample)),
        decoder_weights=detector.model_.W_dec.detach().cpu().numpy(),
        feature_sources=encoder.feature_sources_,
        threshold=detector.threshold_,
        settings=config.drift,
    )


def _trained(
    config: PipelineConfig,
    frame: pl.DataFrame,
    held_out: pl.DataFrame,
    partitions: list[PartitionRecord],
    progress: bool,
) -> ModelArtifact:
    """A model trained from scratch on `frame`."""
    encoder = TabularEncoder(config.columns, config.features, config.context, config.timestamp_column).fit(frame)
    encoded = encoder.encode(frame)
    detector = detector_from_config(config, progress).fit(encoded.matrix, missing=encoded.missing)
    return _artifact(
        config,
        encoder,
        detector,
        frame,
        held_out,
        _replay(config, frame),
        trained_on=[p.name for p in partitions],
        data_fingerprints=_fingerprints(partitions),
        training_kind="train",
        parent_version=None,
    )


def _updated(
    config: PipelineConfig,
    champion: ModelArtifact,
    new_rows: pl.DataFrame,
    held_out: pl.DataFrame,
    partitions: list[PartitionRecord],
    progress: bool,
    confirmed: set[str] = frozenset(),
) -> ModelArtifact:
    """The champion fine-tuned on the new rows plus its replay sample, without the replayed rows a review has since
    confirmed anomalous (`confirmed` keys); its feature encoding is kept (a new category falls into the "other"
    level and shows in the drift report)."""
    unknown_model_columns(champion, config)
    model_columns = champion.encoder.input_columns
    replay = (
        champion.replay.select(model_columns) if champion.replay is not None else new_rows.head(0).select(model_columns)
    )
    replay = without_confirmed_anomalies(config, replay, confirmed)
    frame = pl.concat([new_rows.select(model_columns), replay], how="vertical_relaxed")
    encoded = champion.encoder.encode(frame)
    detector = champion.detector.fine_tuned(encoded.matrix, config.training.update_steps, missing=encoded.missing)
    detector.verbose = progress
    parent = champion.metadata
    replay_pool = pl.concat([replay, new_rows.select(model_columns)], how="vertical_relaxed")
    return _artifact(
        config,
        champion.encoder,
        detector,
        frame,
        held_out,
        _replay(config, replay_pool),
        trained_on=sorted(set(parent.trained_on) | {p.name for p in partitions}),
        data_fingerprints={**parent.data_fingerprints, **_fingerprints(partitions)},
        training_kind="update",
        parent_version=parent.model_version,
    )
