"""Two-sample Kolmogorov-Smirnov test from binned counts (numeric columns; p-value).

``D = max_j |F_ref(e_j) - F_cur(e_j)|`` over the fine bin edges. Both CDFs are exact at the edges; between edges
the supremum can be missed, so D is a lower bound of the raw-data statistic and differs from it by at most the
largest reference or current mass inside one bin (about 0.5 % with 200 quantile bins; 0 when the reference has
<= 1,000 distinct values, where every reference value has its own bin, up to current values lumped between two
reference values). The p-value is the asymptotic two-sample one of ``scipy.stats.ks_2samp(method="asymp")``:
``kstwo.sf(D, round(n m / (n + m)))``. The default choice for numeric columns with a small reference.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.drift.stattests.registry import ColumnCounts, StatTest, StatTestResult


def ks_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic two-sample p-value) from counts over the same bins."""
    n, m = float(reference_counts.sum()), float(current_counts.sum())
    if n == 0 or m == 0:
        return 0.0, 1.0
    difference = np.cumsum(reference_counts)[:-1] / n - np.cumsum(current_counts)[:-1] / m
    statistic = float(np.max(np.abs(difference))) if difference.size else 0.0
    effective = max(1, round(n * m / (n + m)))
    from scipy import stats  # on first use: loading the config (which names this test) needs no scipy

    return statistic, float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))


def _ks(counts: ColumnCounts) -> StatTestResult:
    statistic, p_value = ks_from_counts(counts.fine.reference_counts, counts.fine.current_counts)
    return StatTestResult(score=p_value, statistic=statistic)


KS = StatTest(
    name="ks",
    title="Kolmogorov-Smirnov",
    column_kinds=("numeric",),
    default_threshold=0.05,
    direction="pvalue",
    function=_ks,
)
