"""Incidents in labelled rows, and how many an alert budget surfaces (for benchmarks; the model never sees labels).

An incident is a run of consecutive anomalous rows of one entity (a host, a machine). "Incidents surfaced at a 1%
alert budget" (the measure of Databricks DQX's anomaly-detection docs) is the share of incidents with at least one
alert when the top 1% of rows by anomaly score are flagged: it rewards finding each incident once, not flagging
every row of the longest one.
"""

from __future__ import annotations

import numpy as np


def label_incidents(labels: np.ndarray, entities: np.ndarray | None = None) -> np.ndarray:
    """Number each incident: a run of consecutive anomalous rows of one entity.

    Rows must be in time order within each entity; rows of other entities may come in between (a fleet's rows
    interleaved by time), and partition boundaries play no part, so a run that crosses one stays one incident.

    Returns
    -------
    incidents : ndarray of shape (n_rows,)
        The incident number (0, 1, ...) of each anomalous row, -1 for normal rows.
    """
    labels = np.asarray(labels).astype(bool)
    entities = np.zeros(labels.size, dtype=int) if entities is None else np.asarray(entities)
    order = np.argsort(entities, kind="stable")  # each entity's rows together, still in time order
    ordered, owners = labels[order], entities[order]
    continues = np.zeros(labels.size, dtype=bool)
    continues[1:] = ordered[:-1] & (owners[1:] == owners[:-1])
    starts = ordered & ~continues
    incidents = np.full(labels.size, -1)
    incidents[order] = np.where(ordered, np.cumsum(starts) - 1, -1)
    return incidents


def alerts_at_budget(scores: np.ndarray, budget: float) -> np.ndarray:
    """Flags of the top `budget` share of rows by score: exactly round(budget x rows) rows (at least one), ties
    broken by row order."""
    scores = np.asarray(scores, dtype=float)
    alerts = np.zeros(scores.size, dtype=bool)
    alerts[np.argsort(-scores, kind="stable")[: max(1, round(budget * scores.size))]] = True
    return alerts


def share_surfaced(incidents: np.ndarray, alerts: np.ndarray) -> float | None:
    """The share of the incidents present in these rows (`label_incidents` numbers) with at least one alert; None
    without incidents."""
    present = np.unique(incidents[incidents >= 0])
    if present.size == 0:
        return None
    return float(np.isin(present, incidents[alerts]).mean())


def incidents_surfaced(
    labels: np.ndarray, scores: np.ndarray, entities: np.ndarray | None = None, budget: float = 0.01
) -> float | None:
    """The share of labelled incidents with at least one alert when the top `budget` of rows by score are flagged.

    An incident is a run of consecutive anomalous rows of one entity (`label_incidents`); the alerts are
    `alerts_at_budget`. One budget covers all the rows given: pass one entity's rows for a per-entity budget, a
    fleet's for a fleet-wide one. None without incidents.
    """
    return share_surfaced(label_incidents(labels, entities), alerts_at_budget(scores, budget))
