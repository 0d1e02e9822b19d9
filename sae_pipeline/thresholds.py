"""From anomaly scores to decisions: a threshold at a target false-positive rate, and p-values (empirical in the
body, with a fitted exponential tail so the strongest anomalies still rank).

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


#: Share of the reference (at least `_MIN_TAIL_ROWS` rows) whose excess over its lower edge fits the tail.
_TAIL_SHARE = 0.05
_MIN_TAIL_ROWS = 10


def tail_pvalues(reference_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Empirical p-values (`empirical_pvalues`) in the body; above the reference's top 5 %, an exponential tail
    fitted to the excesses of those top scores, which keeps ranking past the largest reference score (where
    empirical p-values all floor at 1/(n+1)). Decreasing in the score, always in (0, 1]."""
    reference = np.sort(np.asarray(reference_scores, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64)
    pvalues = empirical_pvalues(reference, scores)
    n_tail = min(reference.size, max(_MIN_TAIL_ROWS, int(np.ceil(_TAIL_SHARE * reference.size))))
    if reference.size < _MIN_TAIL_ROWS:
        return pvalues
    edge = reference[-n_tail]
    scale = float((reference[-n_tail:] - edge).mean())
    if not scale > 0:
        return pvalues
    in_tail = scores > edge
    tail = (n_tail / (reference.size + 1.0)) * np.exp(-(scores[in_tail] - edge) / scale)
    pvalues[in_tail] = np.maximum(tail, np.finfo(np.float64).tiny)
    return pvalues
