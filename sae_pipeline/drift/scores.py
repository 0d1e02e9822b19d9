"""Anomaly-score drift: the partition's anomaly scores against the held-out validation scores of the reference.

Why apart from the columns: the scores are tested like a numeric column (same default test choice, same bins),
but their section also reads the detector threshold, which is a bin edge of the score reference so the share of
rows above it is exact, and its picture must show that threshold.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.config import DriftConfig, DriftTestConfig
from sae_pipeline.drift.cdf import REPORT_QUANTILES, quantiles
from sae_pipeline.drift.columns import numeric_column
from sae_pipeline.drift.common import fraction
from sae_pipeline.drift.counts import NumericCounts
from sae_pipeline.drift.plots import score_histogram


def score_section(
    state: NumericCounts | None, n_rows: int, detector_threshold: float | None, settings: DriftConfig
) -> dict:
    """The ``scores`` section of report.json; without a score reference (``state`` None) only counts and nulls."""
    if state is None:
        return {
            "method": None,
            "score": None,
            "threshold": None,
            "drifted": False,
            "statistic": None,
            "psi": None,
            "n_rows": n_rows,
            "quantiles": None,
            "reference_quantiles": None,
            "mean": None,
            "reference_mean": None,
            "detector_threshold": detector_threshold,
            "above_threshold_share": None,
            "reference_above_threshold_share": None,
            "histogram": None,
        }
    column = numeric_column(state, DriftTestConfig(), settings)
    reference_counts = state.reference_counts
    above = reference_above = None
    if detector_threshold is not None:
        first = int(np.searchsorted(state.edges, detector_threshold, side="right"))
        above = fraction(state.counts[first:].sum(), state.counts.sum())
        reference_above = fraction(reference_counts[first:].sum(), reference_counts.sum())
    return {
        "method": column["method"],
        "score": column["score"],
        "threshold": column["threshold"],
        "drifted": column["drifted"],
        "statistic": column["statistic"],
        "psi": column["psi"],
        "n_rows": state.n_rows,
        "quantiles": quantiles(state.edges, state.counts, state.sums, REPORT_QUANTILES),
        "reference_quantiles": column["reference_quantiles"],
        "mean": column["mean"],
        "reference_mean": column["reference_mean"],
        "detector_threshold": detector_threshold,
        "above_threshold_share": above,
        "reference_above_threshold_share": reference_above,
        "histogram": score_histogram(state, detector_threshold),
    }
