"""Jensen-Shannon distance between the two bucket frequency vectors (any column; distance).

Natural log, in [0, sqrt(ln 2)], as ``scipy.spatial.distance.jensenshannon``. The default choice for categorical
and low-cardinality numeric columns with a large reference; latent usage drift (:mod:`..latents`) uses the same
distance between firing profiles.
"""

from __future__ import annotations

import math

import numpy as np

from sae_pipeline.drift.stattests.registry import ColumnCounts, StatTest, StatTestResult


def jensenshannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two count or frequency vectors."""
    p = np.asarray(reference_counts, dtype=float)
    q = np.asarray(current_counts, dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    divergence = 0.5 * (_kl(p, m) + _kl(q, m))
    return float(math.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / m[mask])))


def _jensenshannon(counts: ColumnCounts) -> StatTestResult:
    return StatTestResult(score=jensenshannon(counts.reference, counts.current))


JENSENSHANNON = StatTest(
    name="jensenshannon",
    title="Jensen-Shannon distance",
    column_kinds=("numeric", "categorical"),
    default_threshold=0.1,
    direction="distance",
    function=_jensenshannon,
)
