"""Scoring a validated frame: the input columns plus the scored-output contract columns.

Besides the score, each row says *why* it scored high: `top_features` names the input columns with the largest
reconstruction residuals (one-hot and missing-indicator features are summed back into their source column, so
the names are the columns a data engineer knows).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from sae_pipeline.registry import ModelArtifact
from sae_pipeline.schema import SCORE_COLUMNS


def top_features(residuals: np.ndarray, feature_sources: list[str], k: int) -> list[list[str]]:
    """For each row, the `k` source columns with the largest summed squared residuals, largest first."""
    sources = list(dict.fromkeys(feature_sources))
    membership = np.zeros((len(feature_sources), len(sources)))
    membership[np.arange(len(feature_sources)), [sources.index(name) for name in feature_sources]] = 1.0
    per_source = residuals @ membership
    k = min(k, len(sources))
    order = np.argsort(-per_source, axis=1, kind="stable")[:, :k]
    return np.asarray(sources, dtype=object)[order].tolist()


def score_frame(frame: pl.DataFrame, artifact: ModelArtifact, top_k: int, scored_at: dt.datetime) -> pl.DataFrame:
    """Return `frame` with `anomaly_score`, `anomaly_pvalue`, `is_anomaly`, `top_features`, `model_version`,
    `scored_at` appended (see `schema.SCORE_COLUMNS`)."""
    detector = artifact.detector
    residuals = detector.feature_residuals(artifact.encoder.transform(frame))
    scores = residuals.mean(axis=1)
    scored = frame.with_columns(
        pl.Series("anomaly_score", scores),
        pl.Series("anomaly_pvalue", detector.score_pvalues(scores=scores)),
        pl.Series("is_anomaly", scores > detector.threshold_),
        pl.Series("top_features", top_features(residuals, artifact.encoder.feature_sources_, top_k)),
        pl.lit(artifact.version).alias("model_version"),
        pl.lit(scored_at).alias("scored_at"),
    )
    return scored.with_columns([pl.col(name).cast(dtype) for name, dtype in SCORE_COLUMNS.items()])
