"""Detection metrics against labels, and recall per anomaly kind, on frames small enough to check by hand."""

import numpy as np
import pytest

from sae_pipeline.evaluation import detection_metrics, recall_by_kind
from sae_pipeline.runs import format_evaluation

# Eight rows: four normal (one flagged), four anomalous of two kinds (spike: 2 of 2 flagged; drift: 0 of 1 flagged),
# and an anomalous row without a kind (flagged).
LABELS = np.array([False, False, False, False, True, True, True, True])
FLAGGED = np.array([True, False, False, False, True, True, False, True])
KINDS = np.array([None, None, "spike", None, "spike", "spike", "drift", None], dtype=object)
SCORES = np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.95, 0.4, 0.7])


def test_recall_by_kind_counts_only_labelled_rows_of_each_kind():
    # The normal row whose kind column says "spike" neither counts as a spike nor dilutes its recall.
    assert recall_by_kind(LABELS, FLAGGED, KINDS) == {
        "drift": {"rows": 1, "flagged": 0, "recall": 0.0},
        "spike": {"rows": 2, "flagged": 2, "recall": 1.0},
    }


def test_detection_metrics_report_flagged_rate_on_normal_rows_and_recall_per_kind():
    metrics = detection_metrics(LABELS, SCORES, FLAGGED, KINDS)
    assert metrics["normal_flagged_rate"] == pytest.approx(0.25)
    assert metrics["recall"] == pytest.approx(0.75)
    assert metrics["by_kind"] == recall_by_kind(LABELS, FLAGGED, KINDS)
    assert detection_metrics(LABELS, SCORES, FLAGGED)["by_kind"] is None


def test_detection_metrics_without_normal_rows_have_no_flagged_rate():
    metrics = detection_metrics(LABELS[4:], SCORES[4:], FLAGGED[4:], KINDS[4:])
    assert metrics["normal_flagged_rate"] is None and metrics["auc_roc"] is None
    assert metrics["by_kind"]["spike"]["recall"] == 1.0


def test_the_printed_evaluation_shows_the_normal_flagged_rate_and_recall_per_kind():
    lines = format_evaluation(detection_metrics(LABELS, SCORES, FLAGGED, KINDS))
    assert "  flagged among normal rows: 25.00%" in lines
    assert lines[-2:] == [
        "  drift                        1       0   0.000",
        "  spike                        2       2   1.000",
    ]
