"""From anomaly scores to decisions: a threshold at a target false-positive rate, and p-values.

Both are calibrated on held-out validation scores (rows the model was not fitted on), so that on data like the
training data about `target_fpr` of the rows are flagged and p-values are roughly uniform.
"""

from __future__ import annotations

import numpy as np


def threshold_at_fpr(reference_scores: np.ndarray, target_fpr: float) -> float:
    """The (1 - target_fpr) quantile of the reference scores: rows scoring above it are flagged."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    reference_scores = np.asarray(reference_scores, dtype=np.float64)
    if reference_scores.size == 0:
        raise ValueError("cannot set a threshold without reference scores")
    return float(np.quantile(reference_scores, 1.0 - target_fpr, method="higher"))


def empirical_pvalues(reference_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """P(reference score >= score), with the +1 correction so a p-value is never 0: (1 + #{ref >= s}) / (n + 1)."""
    reference = np.sort(np.asarray(reference_scores, dtype=np.float64))
    at_least = reference.size - np.searchsorted(reference, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (reference.size + 1.0)
