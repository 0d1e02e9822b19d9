"""The stored drift reference: a JSON-able summary of the training data, fine enough for every drift test.

Per numeric column: fixed bin edges (see :mod:`.binning`), the reference's count and sum of values per bin,
missing count, distinct-value count, mean and standard deviation. Per categorical column: counts of the (at most
1,000) most frequent categories. Optionally the same numeric summary of held-out anomaly scores (with the
detector threshold as a bin edge), and latent usage of the SAE (see :mod:`.latents`). No rows are kept.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sae_pipeline.config import DriftConfig
from sae_pipeline.drift import latents
from sae_pipeline.drift.binning import Binner, reference_edges
from sae_pipeline.drift.common import (
    MAX_CATEGORIES,
    OTHER_CATEGORY,
    category_counts,
    finite,
    float_list,
    numeric_values,
    require_columns,
    split_missing,
)

#: Version of the reference layout; DriftAccumulator refuses references it cannot read.
REFERENCE_VERSION = 2
#: Distinct values up to which a numeric reference also stores the values themselves (for bar plots).
STORED_VALUES_MAX = 20


def build_reference(
    frame: pl.DataFrame,
    numeric_columns: list[str],
    categorical_columns: list[str],
    *,
    scores: np.ndarray | None = None,
    codes: np.ndarray | None = None,
    decoder_weights: np.ndarray | None = None,
    feature_sources: list[str] | None = None,
    threshold: float | None = None,
    settings: DriftConfig | None = None,
) -> dict:
    """Summarise reference data so later partitions can be compared without keeping the data itself.

    Parameters
    ----------
    frame : polars DataFrame holding at least the numeric and categorical columns.
    scores : ndarray of shape (n_scores,), optional
        Anomaly scores of held-out rows (training rows would look too normal), e.g. ``validation_scores_``.
    codes : ndarray of shape (n_codes, n_latents), optional
        SAE codes (``SAEDetector.transform``) of reference rows, for latent usage drift.
    decoder_weights : ndarray of shape (n_features, n_latents), optional
        ``detector.model_.W_dec``; with ``feature_sources`` it names the input columns each latent weighs most.
    feature_sources : list of str of length n_features, optional
        Source column of each model feature (``TabularEncoder.feature_sources_``).
    threshold : float, optional
        Detector threshold; stored and made a score bin edge so the above-threshold share is exact.
    settings : DriftConfig, optional
        Uses ``bins`` (quantile-spaced bins per numeric column); defaults to ``DriftConfig()``.
    """
    settings = settings or DriftConfig()
    overlap = sorted(set(numeric_columns) & set(categorical_columns))
    if overlap:
        raise ValueError(f"columns listed as both numeric and categorical: {overlap}")
    require_columns(frame, [*numeric_columns, *categorical_columns])
    columns: dict[str, dict] = {}
    for name in numeric_columns:
        columns[name] = summarise_numeric(numeric_values(frame[name]), settings.bins)
    for name in categorical_columns:
        columns[name] = summarise_categorical(frame[name])
    score_summary = None
    if scores is not None:
        scores = np.asarray(scores, dtype=float).ravel()
        score_summary = summarise_numeric(scores, settings.bins, extra_edges=_score_extra_edges(scores, threshold))
    return {
        "version": REFERENCE_VERSION,
        "n_rows": frame.height,
        "bins": settings.bins,
        "columns": columns,
        "scores": score_summary,
        "threshold": finite(threshold),
        "latents": None if codes is None else latents.summarise_codes(codes, decoder_weights, feature_sources),
    }


def summarise_numeric(values: np.ndarray, bins: int, extra_edges: list[float] | tuple = ()) -> dict:
    """Bins (edges, count and sum of values per bin), missing count, moments of one numeric sample."""
    present, n_missing = split_missing(values)
    ordered = np.sort(present)
    unique = np.unique(ordered)
    edges, exact = reference_edges(unique, ordered, bins)
    if len(extra_edges):
        edges = np.unique(np.concatenate([edges, np.asarray(extra_edges, dtype=float)]))
    counts, sums = Binner(edges).counts_and_sums(present)
    return {
        "kind": "numeric",
        "n_rows": int(values.size),
        "n_missing": n_missing,
        "n_unique": int(unique.size),
        "exact": bool(exact),
        "values": float_list(unique) if unique.size <= STORED_VALUES_MAX else None,
        "edges": float_list(edges),
        "counts": [int(count) for count in counts],
        "sums": float_list(sums),
        "mean": finite(present.mean()) if present.size else None,
        "std": finite(present.std()) if present.size else None,
        "min": finite(ordered[0]) if present.size else None,
        "max": finite(ordered[-1]) if present.size else None,
    }


def summarise_categorical(series: pl.Series) -> dict:
    """Counts of the most frequent categories (nulls counted apart, rare ones pooled as ``__other__``)."""
    counts = category_counts(series)
    n_missing = counts.pop("__null__", 0)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept, rest = ranked[:MAX_CATEGORIES], ranked[MAX_CATEGORIES:]
    if rest:
        kept.append((OTHER_CATEGORY, sum(count for _, count in rest)))
    return {
        "kind": "categorical",
        "n_rows": series.len(),
        "n_missing": int(n_missing),
        "n_unique": len(counts),
        "categories": [category for category, _ in kept],
        "counts": [int(count) for _, count in kept],
    }


def _score_extra_edges(scores: np.ndarray, threshold: float | None) -> list[float]:
    """The threshold, and edges above the largest reference score (x1.25 .. x64) so far tails stay resolved."""
    present = scores[np.isfinite(scores)]
    extra = [] if threshold is None or not np.isfinite(threshold) else [float(threshold)]
    if present.size:
        top = float(present.max())
        if top > 0:
            extra += [top * factor for factor in (1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 32, 64)]
    return extra
