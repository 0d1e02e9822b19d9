"""Plot data of report.json: the reference-vs-current pictures that :mod:`.svg` draws in report.html.

Why in the report and not in the renderer: report.json is the record (a dashboard can draw the same pictures),
and only the accumulated counts can produce them, so they are computed once here. Numeric columns get bars per
value (few distinct values) or shares over 30 display bins between the 0.5 % and 99.5 % points of both samples
(log-spaced for long right tails); categorical columns bars of the most frequent categories; the anomaly scores a
linear histogram that includes the detector threshold.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.drift.cdf import cdf_knots, quantiles
from sae_pipeline.drift.common import UNSEEN_CATEGORY, finite, float_list
from sae_pipeline.drift.counts import NumericCounts

#: Bars of the distribution pictures in the report.
DISPLAY_BINS = 30
#: Positive columns whose upper tail is this many times longer than the lower one get log-spaced bars.
LOG_SCALE_RATIO = 10.0
#: Categories shown in a categorical column's picture (the rest pooled).
DISPLAY_CATEGORIES = 10


def display_range(state: NumericCounts) -> tuple[float, float]:
    """From the lowest 0.5 % point to the highest 99.5 % point of the reference and current samples."""
    reference_counts, reference_sums = state.reference_counts, state.reference_sums
    ends = {"low": 0.005, "high": 0.995}
    points = []
    for counts, sums in ((reference_counts, reference_sums), (state.counts, state.sums)):
        if counts.sum():
            ends_at = quantiles(state.edges, counts, sums, ends)
            points += [ends_at["low"], ends_at["high"]]
    points = [p for p in points if p is not None]
    low, high = min(points), max(points)
    if high <= low:
        high = low + 1.0
        low -= 1.0
    return low, high


def numeric_plot(state: NumericCounts, per_value: bool) -> dict | None:
    """Reference vs current distribution: bars per value (low cardinality) or a density over 30 bins."""
    summary = state.summary
    reference_counts = state.reference_counts.astype(float)
    if reference_counts.sum() == 0 and state.counts.sum() == 0:
        return None
    reference_total = reference_counts.sum() or 1.0
    current_total = state.counts.sum() or 1.0
    if per_value and summary.get("values") is not None and len(summary["values"]) == reference_counts.size:
        return {
            "type": "bars",
            "labels": [f"{value:g}" for value in summary["values"]],
            "reference": float_list(reference_counts / reference_total),
            "current": float_list(state.counts / current_total),
        }
    return histogram(state, *display_range(state))


def skewed(state: NumericCounts) -> bool:
    """Long right tail in the reference: (p99.5 - median) > LOG_SCALE_RATIO x (median - p0.5)."""
    if state.reference_counts.sum() == 0:
        return False
    q = quantiles(
        state.edges, state.reference_counts, state.reference_sums, {"low": 0.005, "median": 0.5, "high": 0.995}
    )
    if None in q.values():
        return False
    return q["high"] - q["median"] > LOG_SCALE_RATIO * max(q["median"] - q["low"], 1e-300)


def histogram(state: NumericCounts, low: float, high: float, allow_log: bool = True) -> dict:
    """Share of each sample in 30 bins over [low, high] (from the binned CDF), and the shares outside.

    Bins are equal on a log scale for positive columns with a long right tail (see ``skewed``), else linear.
    """
    log = allow_log and low > 0 and skewed(state)
    display = np.geomspace(low, high, DISPLAY_BINS + 1) if log else np.linspace(low, high, DISPLAY_BINS + 1)
    result = {"type": "histogram", "log": bool(log), "edges": float_list(display)}
    for label, counts, sums in (
        ("reference", state.reference_counts.astype(float), state.reference_sums),
        ("current", state.counts.astype(float), state.sums),
    ):
        if counts.sum() == 0:
            result[label], result[f"{label}_outside"] = [0.0] * DISPLAY_BINS, [0.0, 0.0]
            continue
        x, y = cdf_knots(state.edges, counts, sums)
        cdf = np.interp(display, x, y, left=0.0, right=1.0)
        result[label] = float_list(np.diff(cdf))
        result[f"{label}_outside"] = [finite(cdf[0]), finite(1.0 - cdf[-1])]
    return result


def categorical_plot(
    categories: list[str], reference_counts: np.ndarray, current_counts: np.ndarray, unseen: int
) -> dict:
    """Shares of the most frequent categories (then the rest pooled as "(other)", then the unseen ones)."""
    reference = reference_counts / (reference_counts.sum() or 1.0)
    current_total = (current_counts.sum() + unseen) or 1.0
    current = current_counts / current_total
    order = np.argsort(-np.maximum(reference, current), kind="stable")
    shown, rest = order[:DISPLAY_CATEGORIES], order[DISPLAY_CATEGORIES:]
    labels = [categories[i] for i in shown]
    reference_shares = [float(reference[i]) for i in shown]
    current_shares = [float(current[i]) for i in shown]
    if rest.size:
        labels.append("(other)")
        reference_shares.append(float(reference[rest].sum()))
        current_shares.append(float(current[rest].sum()))
    if unseen:
        labels.append(UNSEEN_CATEGORY)
        reference_shares.append(0.0)
        current_shares.append(unseen / current_total)
    return {"type": "bars", "labels": labels, "reference": reference_shares, "current": current_shares}


def score_histogram(state: NumericCounts, detector_threshold: float | None) -> dict | None:
    """Anomaly-score histogram (validation scores vs current) over a range that shows the threshold line."""
    if state.counts.sum() == 0:
        return None
    low, high = display_range(state)
    if detector_threshold is not None:
        low, high = min(low, detector_threshold), max(high, detector_threshold * 1.1)
    return histogram(state, low, high, allow_log=False)  # linear: the threshold line reads naturally
