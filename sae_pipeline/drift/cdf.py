"""A binned sample read as a piecewise-linear CDF: the quantiles in report.json and the shares of the pictures.

Why one module: the report's quantiles (columns and anomaly scores) and the display histograms both interpolate
the same CDF through the fine bin edges, so they agree with each other and with the tests' bins.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.drift.common import finite

#: Quantiles reported for numeric columns and for the anomaly scores (estimated from the bins).
REPORT_QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def cdf_knots(edges: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-linear CDF through the bin edges; the open outer bins get a uniform spread matching their mean."""
    if edges.size == 0:
        mean = sums[0] / counts[0]
        return np.array([mean, mean]), np.array([0.0, 1.0])
    x, y = [edges], [np.cumsum(counts)[:-1] / counts.sum()]
    if counts[0]:
        x.insert(0, [min(2 * sums[0] / counts[0] - edges[0], edges[0])])
        y.insert(0, [0.0])
    if counts[-1]:
        x.append([max(2 * sums[-1] / counts[-1] - edges[-1], edges[-1])])
        y.append([1.0])
    return np.concatenate(x, dtype=float), np.concatenate(y, dtype=float)


def quantiles(edges: np.ndarray, counts: np.ndarray, sums: np.ndarray, levels: dict[str, float]) -> dict | None:
    """Quantiles read off the binned CDF (approximate: linear inside each bin); None for an empty sample."""
    if counts.sum() == 0:
        return None
    x, y = cdf_knots(edges, counts, sums)
    # np.interp needs increasing sample points: keep the first knot of every run of equal CDF values.
    keep = np.concatenate([[True], np.diff(y) > 0])
    return {name: finite(np.interp(level, y[keep], x[keep])) for name, level in levels.items()}
