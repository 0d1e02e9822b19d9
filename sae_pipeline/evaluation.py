"""Detection quality against ground-truth labels (for sample data and benchmarks; the model never sees them)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score


def detection_metrics(labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict:
    """AUC-ROC and average precision of the scores, precision and recall of the flags.

    Ranking metrics are None when the labels hold a single class (they are undefined there).
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
    }
