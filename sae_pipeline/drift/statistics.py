"""Drift statistics computed from binned counts, and the rule that picks a test per column.

Every statistic here works on counts (and, for Wasserstein, per-bin sums) over the reference's fixed bins, so
a partition never has to be sorted or kept in memory. How close they are to the textbook statistic on raw data:

* **KS** ``D = max_j |F_ref(e_j) - F_cur(e_j)|`` over the bin edges. Both CDFs are exact at the edges; between
  edges the supremum can be missed, so D is a lower bound of the raw-data statistic and differs from it by at
  most the largest reference or current mass inside one bin (about 0.5 % with 200 quantile bins; 0 when the
  reference has <= 1,000 distinct values, where every reference value has its own bin, up to current values
  lumped between two reference values). The p-value is the asymptotic two-sample one of
  ``scipy.stats.ks_2samp(method="asymp")``: ``kstwo.sf(D, round(n m / (n + m)))``.
* **Wasserstein-1** ``W = integral |F_ref - F_cur| dx``: per bin, ``integral F dx`` is exact given the count
  below the bin, the count in it and the sum of the values in it (also for the two unbounded outer bins). The
  estimate is ``sum_bins |integral_bin (F_ref - F_cur) dx|``: exact when the CDFs do not cross inside a bin,
  otherwise a lower bound. It is normalised by the reference standard deviation (floored at 0.001), like
  Evidently's ``wasserstein`` test.
* **PSI** ``sum (c - r) ln(c / r)`` over equal-frequency groups of the fine bins (deciles by default) or over
  categories, fractions floored at 1e-4.
* **Chi-square**: the two-sample test of homogeneity on the 2 x k table (reference counts, current counts) of
  categories or value bins (``scipy.stats.chi2_contingency`` without continuity correction); categories seen
  in neither sample are dropped. Score = p-value.
* **Jensen-Shannon distance** (natural log, in [0, sqrt(ln 2)]) between the two frequency vectors, as
  ``scipy.spatial.distance.jensenshannon``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: Default threshold per method: p-values for ks/chisquare, distances otherwise (Evidently's defaults).
DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1, "psi": 0.1}
#: Methods whose score is a p-value (drift when score <= threshold); the others are distances (score >= threshold).
PVALUE_METHODS = ("ks", "chisquare")
#: Floor for bucket fractions so that empty buckets keep PSI finite.
PSI_EPSILON = 1e-4
#: Floor of the reference standard deviation that normalises the Wasserstein distance.
WASSERSTEIN_MIN_STD = 1e-3


def choose_method(kind: str, reference_rows: int, n_unique: int, small_reference_rows: int, low_cardinality: int) -> str:
    """Evidently-like default test: numeric with > ``low_cardinality`` values -> KS (small reference) or
    Wasserstein; categorical or low-cardinality numeric -> chi-square (small reference) or Jensen-Shannon."""
    small = reference_rows <= small_reference_rows
    if kind == "numeric" and n_unique > low_cardinality:
        return "ks" if small else "wasserstein"
    return "chisquare" if small else "jensenshannon"


def is_drifted(method: str, score: float | None, threshold: float) -> bool:
    if score is None:
        return False
    return score <= threshold if method in PVALUE_METHODS else score >= threshold


def severity(method: str, score: float | None, threshold: float) -> float:
    """How far past (> 1) or below (< 1) its threshold a score is, comparable across methods (for sorting)."""
    if score is None:
        return 0.0
    if method in PVALUE_METHODS:
        return float(math.log(max(score, 1e-300)) / math.log(threshold)) if threshold < 1 else 0.0
    return float(score / threshold)


def ks_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic two-sample p-value) from counts over the same bins."""
    n, m = float(reference_counts.sum()), float(current_counts.sum())
    if n == 0 or m == 0:
        return 0.0, 1.0
    difference = np.cumsum(reference_counts)[:-1] / n - np.cumsum(current_counts)[:-1] / m
    statistic = float(np.max(np.abs(difference))) if difference.size else 0.0
    effective = max(1, round(n * m / (n + m)))
    return statistic, float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))


def _integral_parts(edges: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Per bin: integral of the empirical CDF over the bin (last bin: integral of 1 - CDF), given counts and sums.

    For bin [a, b) and n values: integral_a^b F = (below * (b - a) + count * b - sum) / n; over (-inf, e_0):
    (count_0 e_0 - sum_0) / n; over [e_K, inf): integral (1 - F) = (sum_K - count_K e_K) / n.
    """
    n = counts.sum()
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    parts = np.empty(counts.size)
    if edges.size == 0:
        parts[0] = 0.0
        return parts
    parts[0] = counts[0] * edges[0] - sums[0]
    width = np.diff(edges)
    inner = slice(1, counts.size - 1)
    parts[inner] = below[inner] * width + counts[inner] * edges[1:] - sums[inner]
    parts[-1] = sums[-1] - counts[-1] * edges[-1]
    return parts / n


def wasserstein_from_bins(edges: np.ndarray, reference_counts: np.ndarray, reference_sums: np.ndarray,
                          current_counts: np.ndarray, current_sums: np.ndarray) -> float:
    """Wasserstein-1 distance estimated from per-bin counts and sums (exact unless the CDFs cross inside a bin)."""
    if reference_counts.sum() == 0 or current_counts.sum() == 0:
        return 0.0
    if edges.size == 0:  # one bin: both samples are summarised by their mean only
        return float(abs(reference_sums[0] / reference_counts[0] - current_sums[0] / current_counts[0]))
    reference = _integral_parts(edges, reference_counts, reference_sums)
    current = _integral_parts(edges, current_counts, current_sums)
    return float(np.sum(np.abs(reference - current)))


def normalised_wasserstein(distance: float, reference_std: float | None) -> float:
    return distance / max(reference_std or 0.0, WASSERSTEIN_MIN_STD)


def psi(reference_fractions: np.ndarray, current_fractions: np.ndarray) -> float:
    reference = np.maximum(np.asarray(reference_fractions, dtype=float), PSI_EPSILON)
    current = np.maximum(np.asarray(current_fractions, dtype=float), PSI_EPSILON)
    return float(np.sum((current - reference) * np.log(current / reference)))


def chisquare_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test of homogeneity on the 2 x k table of counts."""
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def jensenshannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two count or frequency vectors."""
    p = np.asarray(reference_counts, dtype=float)
    q = np.asarray(current_counts, dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    divergence = 0.5 * (_kl(p, m) + _kl(q, m))
    return float(math.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / m[mask])))


def equal_frequency_groups(reference_counts: np.ndarray, n_groups: int) -> np.ndarray:
    """Group index of each fine bin so that groups hold about equal reference mass (deciles for 10)."""
    total = reference_counts.sum()
    if total == 0:
        return np.zeros(reference_counts.size, dtype=np.intp)
    middle = (np.cumsum(reference_counts) - reference_counts / 2.0) / total
    return np.minimum((middle * n_groups).astype(np.intp), n_groups - 1)


def grouped(counts: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(groups, weights=counts, minlength=n_groups)


def binomial_upper_pvalue(n_flagged: int, n: int, rate: float) -> float:
    """P(X >= n_flagged) for X ~ Binomial(n, rate): small when more rows are flagged than ``rate`` explains."""
    if n == 0:
        return 1.0
    return float(stats.binom.sf(n_flagged - 1, n, rate))
