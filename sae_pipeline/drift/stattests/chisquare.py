"""Chi-square test of homogeneity on the 2 x k table of bucket counts (any column; p-value).

``scipy.stats.chi2_contingency`` without continuity correction on (reference counts, current counts) of the
categories or value buckets; buckets seen in neither sample are dropped. The default choice for categorical and
low-cardinality numeric columns with a small reference.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.drift.stattests.registry import ColumnCounts, StatTest, StatTestResult


def chisquare_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test of homogeneity on the 2 x k table of counts."""
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    from scipy import stats  # on first use: loading the config (which names this test) needs no scipy

    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def _chisquare(counts: ColumnCounts) -> StatTestResult:
    statistic, p_value = chisquare_from_counts(counts.reference, counts.current)
    return StatTestResult(score=p_value, statistic=statistic)


CHISQUARE = StatTest(
    name="chisquare",
    title="Chi-square",
    column_kinds=("numeric", "categorical"),
    default_threshold=0.05,
    direction="pvalue",
    function=_chisquare,
)
