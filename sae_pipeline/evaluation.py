"""Detection quality against ground-truth labels (for sample data and benchmarks; the model never sees them)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score


def detection_metrics(
    labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray, kinds: np.ndarray | None = None
) -> dict:
    """AUC-ROC and average precision of the scores, precision and recall of the flags, the flagged rate on normal
    rows (to compare with the target FPR) and, given each row's anomaly kind, recall per kind (`recall_by_kind`).

    Ranking metrics are None when the labels hold a single class (they are undefined there), the normal rows'
    flagged rate when there are none, and `by_kind` without kinds.
    """
    labels = np.asarray(labels).astype(bool)
    flagged = np.asarray(flagged).astype(bool)
    both_classes = 0 < labels.sum() < labels.size
    return {
        "rows": int(labels.size),
        "positives": int(labels.sum()),
        "flagged": int(flagged.sum()),
        "auc_roc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "average_precision": float(average_precision_score(labels, scores)) if both_classes else None,
        "precision": float(precision_score(labels, flagged, zero_division=0)),
        "recall": float(recall_score(labels, flagged, zero_division=0)),
        "normal_flagged_rate": float(flagged[~labels].mean()) if (~labels).any() else None,
        "by_kind": None if kinds is None else recall_by_kind(labels, flagged, kinds),
    }


def recall_by_kind(labels: np.ndarray, flagged: np.ndarray, kinds: np.ndarray) -> dict[str, dict]:
    """For each kind of labelled anomaly (in name order): its rows, how many were flagged and that share (recall).

    Only rows labelled anomalous count, so a kind column that also names normal rows does not dilute recall; an
    anomalous row without a kind counts in the overall recall only.
    """
    labels = np.asarray(labels).astype(bool)
    flagged = np.asarray(flagged).astype(bool)
    kinds = np.asarray(kinds, dtype=object)
    by_kind = {}
    for kind in sorted({kind for kind in kinds[labels] if kind is not None}):
        rows = labels & (kinds == kind)
        by_kind[str(kind)] = {
            "rows": int(rows.sum()),
            "flagged": int(flagged[rows].sum()),
            "recall": float(flagged[rows].mean()),
        }
    return by_kind
