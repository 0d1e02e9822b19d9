"""Column tests: run each column's registered drift test on its accumulated counts and say whether it drifted.

Why a module of its own: the accumulator only counts; which test a column gets (per-column override, else
per-type override, else :func:`.stattests.choose_method`), the buckets every test reads
(:class:`.stattests.ColumnCounts`) and the verdict (test past its threshold in the test's direction, or a null
share jump) are decided here, once for every column kind. Dispatch goes through the registry only: a method
that is not registered, or does not apply to the column's kind, raises (naming the available ones); there is
no fallback.
"""

from __future__ import annotations

import numpy as np

from sae_pipeline.config import DriftConfig, DriftTestConfig
from sae_pipeline.drift import plots
from sae_pipeline.drift.cdf import REPORT_QUANTILES, quantiles
from sae_pipeline.drift.common import NULL_CATEGORY, OTHER_CATEGORY, finite, fraction
from sae_pipeline.drift.counts import CategoryCounts, NumericCounts
from sae_pipeline.drift.stattests import ColumnCounts, FineBins, StatTest, choose_method, get_stattest
from sae_pipeline.drift.stattests.psi import bucket_psi

#: Unseen categories listed by name per column.
LISTED_UNSEEN = 5


def configured_test(settings: DriftConfig, name: str, kind: str) -> DriftTestConfig:
    """Per-column override, else per-type override, else nothing (method and threshold chosen by rule)."""
    per_type = settings.numeric if kind == "numeric" else settings.categorical
    per_column = settings.columns.get(name, DriftTestConfig())
    return DriftTestConfig(
        method=per_column.method or per_type.method, threshold=per_column.threshold or per_type.threshold
    )


def resolve_test(
    test: DriftTestConfig, kind: str, reference_rows: int, n_unique: int, settings: DriftConfig
) -> tuple[StatTest, float]:
    """The registered test for a column (the configured one, else the default choice) and its threshold."""
    method = test.method or choose_method(
        kind, reference_rows, n_unique, settings.small_reference_rows, settings.low_cardinality
    )
    stattest = get_stattest(method, kind)
    return stattest, test.threshold or stattest.default_threshold


def equal_frequency_groups(reference_counts: np.ndarray, n_groups: int) -> np.ndarray:
    """Group index of each fine bin so that groups hold about equal reference mass (deciles for 10)."""
    total = reference_counts.sum()
    if total == 0:
        return np.zeros(reference_counts.size, dtype=np.intp)
    middle = (np.cumsum(reference_counts) - reference_counts / 2.0) / total
    return np.minimum((middle * n_groups).astype(np.intp), n_groups - 1)


def grouped(counts: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(groups, weights=counts, minlength=n_groups)


def run_test(stattest: StatTest, counts: ColumnCounts) -> tuple[float | None, float | None, float | None]:
    """(score, statistic, psi) of a column; all None when either sample has no non-missing value."""
    if not counts.reference.sum() or not counts.current.sum():
        return None, None, None
    result = stattest.function(counts)
    return result.score, result.statistic, bucket_psi(counts)


def numeric_column(state: NumericCounts, test: DriftTestConfig, settings: DriftConfig) -> dict:
    """The report.json entry of a numeric column (also used for the anomaly scores)."""
    summary = state.summary
    reference_counts, reference_sums = state.reference_counts, state.reference_sums
    present = int(state.counts.sum())
    reference_present = int(reference_counts.sum())
    stattest, threshold = resolve_test(test, "numeric", reference_present, summary["n_unique"], settings)
    # Bucket tests (and PSI) use one bucket per value for low-cardinality columns, else equal-frequency groups.
    per_value = summary["exact"] and summary["n_unique"] <= max(settings.low_cardinality, settings.psi_bins)
    if per_value:
        buckets_reference, buckets_current = reference_counts, state.counts
    else:
        groups = equal_frequency_groups(reference_counts, settings.psi_bins)
        buckets_reference = grouped(reference_counts, groups, settings.psi_bins)
        buckets_current = grouped(state.counts, groups, settings.psi_bins)
    fine = FineBins(
        edges=state.edges,
        reference_counts=reference_counts,
        reference_sums=reference_sums,
        current_counts=state.counts,
        current_sums=state.sums,
        reference_std=summary["std"],
    )
    score, statistic, psi = run_test(stattest, ColumnCounts(buckets_reference, buckets_current, fine))
    mean = finite(state.sums.sum() / present) if present else None
    entry = _column_entry(
        "numeric", stattest, score, threshold, statistic, psi, state.n_rows, state.n_missing, summary, settings
    )
    entry.update(
        {
            "mean": mean,
            "reference_mean": summary["mean"],
            "quantiles": quantiles(state.edges, state.counts, state.sums, REPORT_QUANTILES) if present else None,
            "reference_quantiles": quantiles(state.edges, reference_counts, reference_sums, REPORT_QUANTILES)
            if reference_present
            else None,
            "unseen_share": None,
            "unseen_categories": [],
            "plot": plots.numeric_plot(state, per_value),
        }
    )
    return entry


def categorical_column(state: CategoryCounts, test: DriftTestConfig, settings: DriftConfig) -> dict:
    """The report.json entry of a categorical column: one bucket per reference category plus one for unseen ones."""
    summary = state.summary
    categories: list[str] = summary["categories"]
    known = set(categories)
    current = dict(state.counts)
    n_missing = current.pop(NULL_CATEGORY, 0)
    reference_counts = np.asarray(summary["counts"], dtype=float)
    # Categories the reference pooled as "other" are not unseen; without such a pool every new category is.
    pooled = OTHER_CATEGORY in known
    unseen = {category: count for category, count in current.items() if category not in known}
    current_counts = np.array([current.get(category, 0) for category in categories], dtype=float)
    if pooled:
        current_counts[categories.index(OTHER_CATEGORY)] += sum(unseen.values())
        unseen = {}
    unseen_total = sum(unseen.values())
    buckets_reference = np.append(reference_counts, 0.0)
    buckets_current = np.append(current_counts, unseen_total)
    present = int(buckets_current.sum())
    reference_present = int(reference_counts.sum())
    stattest, threshold = resolve_test(test, "categorical", reference_present, summary["n_unique"], settings)
    score, statistic, psi = run_test(stattest, ColumnCounts(buckets_reference, buckets_current))
    entry = _column_entry(
        "categorical", stattest, score, threshold, statistic, psi, state.n_rows, n_missing, summary, settings
    )
    ranked_unseen = sorted(unseen.items(), key=lambda item: (-item[1], item[0]))[:LISTED_UNSEEN]
    entry.update(
        {
            "mean": None,
            "reference_mean": None,
            "quantiles": None,
            "reference_quantiles": None,
            "unseen_share": fraction(unseen_total, present),
            "unseen_categories": [{"category": c, "fraction": fraction(n, present)} for c, n in ranked_unseen],
            "plot": plots.categorical_plot(categories, reference_counts, current_counts, unseen_total),
        }
    )
    return entry


def _column_entry(
    kind: str,
    stattest: StatTest,
    score: float | None,
    threshold: float,
    statistic: float | None,
    psi: float | None,
    n_rows: int,
    n_missing: int,
    summary: dict,
    settings: DriftConfig,
) -> dict:
    null_share = fraction(n_missing, n_rows)
    reference_null_share = fraction(summary["n_missing"], summary["n_rows"])
    null_drifted = n_rows > 0 and abs(null_share - reference_null_share) >= settings.null_share_threshold
    test_drifted = stattest.drifted(score, threshold)
    # Sorting key: the test's severity, or for a null-share jump how far it is past its own threshold.
    severity = stattest.severity(score, threshold)
    if null_drifted:
        severity = max(severity, abs(null_share - reference_null_share) / settings.null_share_threshold)
    return {
        "kind": kind,
        "method": stattest.name,
        "score": finite(score),
        "threshold": threshold,
        "drifted": bool(test_drifted or null_drifted),
        "test_drifted": bool(test_drifted),
        "null_drifted": bool(null_drifted),
        "severity": finite(severity) or 0.0,
        "statistic": finite(statistic),
        "psi": finite(psi),
        "n_rows": n_rows,
        "null_share": null_share,
        "reference_null_share": reference_null_share,
    }
