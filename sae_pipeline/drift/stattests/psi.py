"""Population stability index over the buckets (any column; distance).

``sum (c - r) ln(c / r)`` over the bucket fractions (equal-frequency groups of the fine bins, deciles by default,
values or categories), fractions floored at 1e-4 so empty buckets keep it finite. Never the default choice, but
reported for every column (``psi`` in each column of report.json, from :func:`bucket_psi`) because many teams
know its thresholds.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.drift.stattests.registry import ColumnCounts, StatTest, StatTestResult

#: Floor for bucket fractions so that empty buckets keep PSI finite.
PSI_EPSILON = 1e-4


def psi(reference_fractions: np.ndarray, current_fractions: np.ndarray) -> float:
    reference = np.maximum(np.asarray(reference_fractions, dtype=float), PSI_EPSILON)
    current = np.maximum(np.asarray(current_fractions, dtype=float), PSI_EPSILON)
    return float(np.sum((current - reference) * np.log(current / reference)))


def bucket_psi(counts: ColumnCounts) -> float:
    """PSI of the current bucket counts against the reference ones (both samples non-empty)."""
    return psi(counts.reference / int(counts.reference.sum()), counts.current / int(counts.current.sum()))


def _psi(counts: ColumnCounts) -> StatTestResult:
    return StatTestResult(score=bucket_psi(counts))


PSI = StatTest(
    name="psi",
    title="Population stability index",
    column_kinds=("numeric", "categorical"),
    default_threshold=0.1,
    direction="distance",
    function=_psi,
)
