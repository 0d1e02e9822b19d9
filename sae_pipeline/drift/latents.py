"""Latent usage drift: what only a sparse autoencoder can tell about a partition.

Each latent is summarised by its firing frequency (share of rows where its code is > 0) and its mean activation
(over all rows). The reference stores both for reference rows, and the input columns each latent's decoder
direction weighs most (``|W_dec[:, j]|`` summed per source column, as shares), so a shift can be described in
the reader's terms ("latent 17, mostly cpu_pct and latency_ms, fires on 31 % of rows instead of 4 %").

The partition-level score is the Jensen-Shannon distance between the two firing profiles (each latent's share
of all firings): a new mix of active latents means the data is built from different patterns.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.drift.common import finite, float_list
from sae_pipeline.drift.stattests.jensenshannon import jensenshannon

#: Input columns kept per latent to describe it.
TOP_COLUMNS = 3
#: A latent is only called silent when the reference frequency predicts at least this many firings.
MIN_EXPECTED_FIRINGS = 5.0


def describe_latents(decoder_weights: np.ndarray, feature_sources: list[str] | None) -> list[list[dict]]:
    """Per latent, the input columns its decoder direction weighs most, with their share of the weight."""
    weights = np.abs(np.asarray(decoder_weights, dtype=float))
    n_features, n_latents = weights.shape
    sources = list(feature_sources) if feature_sources is not None else [f"feature_{i}" for i in range(n_features)]
    if len(sources) != n_features:
        raise ValueError(f"feature_sources has {len(sources)} entries but decoder_weights has {n_features} rows")
    names = sorted(set(sources), key=sources.index)
    owner = np.array([names.index(source) for source in sources])
    per_column = np.zeros((len(names), n_latents))
    np.add.at(per_column, owner, weights)
    totals = per_column.sum(axis=0)
    described = []
    for latent in range(n_latents):
        order = np.argsort(-per_column[:, latent], kind="stable")[:TOP_COLUMNS]
        total = totals[latent] or 1.0
        described.append([{"column": names[i], "weight": float(per_column[i, latent] / total)} for i in order])
    return described


def summarise_codes(codes: np.ndarray, decoder_weights: np.ndarray | None, feature_sources: list[str] | None) -> dict:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n_rows, n_latents), got shape {codes.shape}")
    n_rows, n_latents = codes.shape
    if decoder_weights is not None and np.shape(decoder_weights)[1] != n_latents:
        raise ValueError(f"decoder_weights has {np.shape(decoder_weights)[1]} latents but codes have {n_latents}")
    fire, total = usage(codes)
    return {
        "n_rows": int(n_rows),
        "n_latents": int(n_latents),
        "fire_counts": [int(count) for count in fire],
        "activation_sums": float_list(total),
        "columns": None if decoder_weights is None else describe_latents(decoder_weights, feature_sources),
    }


def usage(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per latent: number of rows where it fires (> 0) and the sum of its activations. Column totals of float32
    codes through `einsum` and of the firings as bytes: numpy's column sums that cast each value (to float64, bool
    to int) took 21 ms per 131,072 x 64 batch, these 15 ms, with the same sums."""
    codes = np.asarray(codes)
    fires = (codes > 0).view(np.uint8).sum(axis=0, dtype=np.int64)
    return fires, np.einsum("ij->j", codes, dtype=np.float64)


def compare_usage(
    reference: dict,
    fire: np.ndarray,
    total: np.ndarray,
    n_rows: int,
    *,
    threshold: float,
    min_frequency: float,
    top: int,
) -> dict:
    """Latent usage section of the report: frequencies, silent/new latents, the largest shifts, one JS score."""
    reference_fire = np.asarray(reference["fire_counts"], dtype=float)
    reference_rows = max(reference["n_rows"], 1)
    reference_frequency = reference_fire / reference_rows
    reference_mean = np.asarray(reference["activation_sums"], dtype=float) / reference_rows
    frequency = fire / n_rows if n_rows else np.zeros_like(reference_frequency)
    mean = total / n_rows if n_rows else np.zeros_like(reference_mean)
    silent = np.flatnonzero(
        (reference_frequency >= min_frequency) & (fire == 0) & (reference_frequency * n_rows >= MIN_EXPECTED_FIRINGS)
    )
    new = np.flatnonzero((reference_fire == 0) & (frequency >= min_frequency) & (fire > 0))
    change = frequency - reference_frequency
    order = np.argsort(-np.abs(change), kind="stable")[:top] if n_rows else np.array([], dtype=int)
    columns = reference.get("columns")
    score = jensenshannon(reference_fire, fire) if n_rows else None

    def entry(latent: int) -> dict:
        return {
            "latent": int(latent),
            "reference_frequency": float(reference_frequency[latent]),
            "frequency": float(frequency[latent]),
            "reference_mean_activation": finite(reference_mean[latent]),
            "mean_activation": finite(mean[latent]),
            "change": float(change[latent]),
            "columns": columns[latent] if columns else [],
        }

    return {
        "n_latents": int(reference_frequency.size),
        "method": "jensenshannon",
        "score": score,
        "threshold": threshold,
        "drifted": bool(score is not None and score >= threshold),
        "silent": [entry(latent) for latent in silent],
        "new": [entry(latent) for latent in new],
        "top_shifts": [entry(latent) for latent in order if change[latent] != 0],
        "reference_frequency": float_list(reference_frequency),
        "frequency": float_list(frequency),
    }
