"""The review-loop benchmark's incident precision, recall and alerts (benchmarks/review_loop.py) on a tiny fleet."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tests.conftest import benchmark_module

review_loop = benchmark_module("review_loop")

DAY1, DAY2 = dt.datetime(2026, 11, 1), dt.datetime(2026, 11, 2)


def labelled_rows() -> pl.DataFrame:
    """Two hosts, 4 readings each per day; host a: anomalous at readings 1-2 of day 1 (one labelled incident);
    host b: anomalous at reading 0 and at reading 3 of day 2 (two labelled incidents: not consecutive)."""
    rows = []
    for day in (DAY1, DAY2):
        for host in ("a", "b"):
            for reading in range(4):
                time = day + dt.timedelta(minutes=10 * reading)
                label = (host, day, reading) in {("a", DAY1, 1), ("a", DAY1, 2), ("b", DAY2, 0), ("b", DAY2, 3)}
                rows.append({"row_key": f"{host}@{time:%H%M}-{day.day}", "entity": host, "time": time, "label": label})
    return pl.DataFrame(rows).sort("time")


def key(host: str, day: dt.datetime, reading: int) -> str:
    return f"{host}@{day + dt.timedelta(minutes=10 * reading):%H%M}-{day.day}"


def test_incident_quality_counts_precision_recall_and_alerts_per_day():
    labelled = labelled_rows()
    # i1: host a's anomaly (one of its rows); i2: a false alarm on host a; i3: host b's first anomaly of day 2,
    # suppressed; i4: a false alarm on host b, suppressed; i5: host b's second anomaly of day 2, raised.
    rows = pl.DataFrame(
        {
            "row_key": [key("a", DAY1, 2), key("a", DAY2, 1), key("b", DAY2, 0), key("b", DAY2, 1), key("b", DAY2, 3)],
            "incident_id": ["i1", "i2", "i3", "i4", "i5"],
        }
    )
    incidents = pl.DataFrame(
        {
            "incident_id": ["i1", "i2", "i3", "i4", "i5"],
            "start": [DAY1, DAY2, DAY2, DAY2, DAY2 + dt.timedelta(minutes=30)],
            "status": ["open", "open", "suppressed", "suppressed", "open"],
        }
    )

    quality = review_loop.incident_quality(labelled, rows, incidents)

    assert quality["incidents"] == 5 and quality["raised"] == 3
    assert (quality["true_raised"], quality["false_raised"]) == (2, 1)
    assert (quality["suppressed_true"], quality["suppressed_false"]) == (1, 1)
    assert quality["precision"] == pytest.approx(2 / 3)
    assert (quality["labelled_incidents"], quality["recalled"]) == (3, 2)  # b's first incident was suppressed
    assert quality["recall"] == pytest.approx(2 / 3)
    assert quality["alerts_by_day"] == {"2026-11-01": 1, "2026-11-02": 2}
    assert quality["alerts_per_day"] == pytest.approx(1.5)
    assert quality["labelled_by_day"] == {"2026-11-01": 1, "2026-11-02": 2}


def test_reviewer_marks_incidents_from_the_labels():
    labelled = labelled_rows()
    rows = pl.DataFrame({"row_key": [key("a", DAY1, 1), key("a", DAY2, 0)], "incident_id": ["i1", "i2"]})
    incidents = pl.DataFrame({"incident_id": ["i1", "i2"]})

    verdicts = review_loop.reviewer_verdicts(rows, incidents, labelled)

    assert dict(verdicts.select("incident_id", "verdict").iter_rows()) == {"i1": "anomaly", "i2": "normal"}
