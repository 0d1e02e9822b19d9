"""Accumulate a partition's drift statistics batch by batch against a stored reference, then report.

    acc = DriftAccumulator(reference, settings)          # settings: the config's `drift` section
    for batch, scores, flagged, codes in batches:
        acc.update(batch, scores, flagged, codes)
    report = acc.report(partition="day=2026-11-09", quarantined_rows=12, expected_anomaly_rate=0.01)

Per batch the work is vectorised and O(rows): each numeric column is counted into the reference's fixed bins
(:class:`.binning.Binner`, a grid lookup instead of a binary search) with its per-bin sums, categorical columns
by ``value_counts``; nothing is sorted and no rows are kept. Counts add up across batches, so any split of a
partition into batches gives the same report as one batch.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl

from sae_pipeline.config import DriftConfig, DriftTestConfig
from sae_pipeline.drift import latents, statistics
from sae_pipeline.drift.binning import Binner
from sae_pipeline.drift.common import (
    NULL_CATEGORY,
    OTHER_CATEGORY,
    UNSEEN_CATEGORY,
    category_counts,
    finite,
    float_list,
    fraction,
    numeric_values,
    require_columns,
    split_missing,
)
from sae_pipeline.drift.reference import REFERENCE_VERSION
from sae_pipeline.drift.report import SCHEMA_VERSION, overall_status, validate_report

logger = logging.getLogger(__name__)

#: Score quantiles reported (estimated from the bins).
SCORE_QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
#: Bars of the distribution pictures in the report.
DISPLAY_BINS = 30
#: Positive columns whose upper tail is this many times longer than the lower one get log-spaced bars.
LOG_SCALE_RATIO = 10.0
#: Categories shown in a categorical column's picture (the rest pooled).
DISPLAY_CATEGORIES = 10
#: Unseen categories listed by name per column.
LISTED_UNSEEN = 5
#: Rows binned at a time (fits the CPU cache; measured ~1.6x faster than whole 2M-row columns).
CHUNK_ROWS = 1 << 16


class ReferenceVersionError(ValueError):
    """The stored reference was built by another release (e.g. a model trained before drift references v2)."""


class _NumericState:
    """Running per-bin counts and sums of one numeric column (or of the anomaly scores)."""

    def __init__(self, summary: dict):
        self.summary = summary
        self.edges = np.asarray(summary["edges"], dtype=float)
        self.binner = Binner(self.edges)
        self.counts = np.zeros(self.edges.size + 1, dtype=np.int64)
        self.sums = np.zeros(self.edges.size + 1)
        self.n_rows = 0
        self.n_missing = 0

    def update(self, values: np.ndarray) -> None:
        # Slices that fit in the CPU cache: the binning makes several passes over its input.
        for start in range(0, len(values), CHUNK_ROWS):
            present, n_missing = split_missing(values[start:start + CHUNK_ROWS])
            counts, sums = self.binner.counts_and_sums(present)
            self.counts += counts
            self.sums += sums
            self.n_missing += n_missing
        self.n_rows += len(values)


class _CategoricalState:
    def __init__(self, summary: dict):
        self.summary = summary
        self.counts: dict[str, int] = {}
        self.n_rows = 0

    def update(self, series: pl.Series) -> None:
        for category, count in category_counts(series).items():
            self.counts[category] = self.counts.get(category, 0) + count
        self.n_rows += series.len()


class DriftAccumulator:
    """Drift of one partition versus ``reference`` (from :func:`build_reference`), fed in record batches."""

    def __init__(self, reference: dict, settings: DriftConfig | None = None):
        if reference.get("version") != REFERENCE_VERSION:
            raise ReferenceVersionError(
                f"drift reference version {reference.get('version')!r} is not {REFERENCE_VERSION}: "
                "it was built by another release; retrain (or rebuild the reference) to get drift reports"
            )
        self.reference = reference
        self.settings = settings or DriftConfig()
        self._columns = {
            name: _NumericState(summary) if summary["kind"] == "numeric" else _CategoricalState(summary)
            for name, summary in reference["columns"].items()
        }
        self._scores = _NumericState(reference["scores"]) if reference.get("scores") else None
        self._n_rows = 0
        self._n_flagged = 0
        self._saw_flags = False
        self._saw_scores = False
        latent_reference = reference.get("latents")
        n_latents = latent_reference["n_latents"] if latent_reference else 0
        self._latent_fire = np.zeros(n_latents, dtype=np.int64)
        self._latent_total = np.zeros(n_latents)
        self._latent_rows = 0

    # ------------------------------------------------------------------------------------------------- update

    def update(self, batch: pl.DataFrame, scores: np.ndarray | None = None, flagged: np.ndarray | None = None,
               codes: np.ndarray | None = None) -> DriftAccumulator:
        """Add one record batch: its rows, and optionally per-row scores, anomaly flags and SAE codes."""
        require_columns(batch, list(self._columns))
        for label, per_row in (("scores", scores), ("flagged", flagged), ("codes", codes)):
            if per_row is not None and len(per_row) != batch.height:
                raise ValueError(f"{label} has {len(per_row)} rows but the batch has {batch.height}")
        for name, state in self._columns.items():
            if isinstance(state, _NumericState):
                state.update(numeric_values(batch[name]))
            else:
                state.update(batch[name])
        self._n_rows += batch.height
        if scores is not None:
            self._saw_scores = True
            if self._scores is not None:
                self._scores.update(np.asarray(scores, dtype=float))
        if flagged is not None:
            self._saw_flags = True
            self._n_flagged += int(np.count_nonzero(np.asarray(flagged)))
        if codes is not None and self._latent_fire.size:
            if np.shape(codes)[1] != self._latent_fire.size:
                raise ValueError(f"codes have {np.shape(codes)[1]} latents, the reference {self._latent_fire.size}")
            fire, total = latents.usage(codes)
            self._latent_fire += fire
            self._latent_total += total
            self._latent_rows += len(codes)
        return self

    # ------------------------------------------------------------------------------------------------- report

    def report(self, partition: str = "", quarantined_rows: int | None = None,
               quarantine_reasons: dict[str, int] | None = None,
               expected_anomaly_rate: float | None = None) -> dict:
        """The report.json content for everything added so far (validated against the schema)."""
        if expected_anomaly_rate is not None and not 0.0 < expected_anomaly_rate < 1.0:
            raise ValueError(f"expected_anomaly_rate must be strictly between 0 and 1, got {expected_anomaly_rate}")
        columns = {}
        for name, state in self._columns.items():
            test = self._test_for(name, state.summary["kind"])
            if isinstance(state, _NumericState):
                columns[name] = _numeric_column(state, test, self.settings)
            else:
                columns[name] = _categorical_column(state, test, self.settings)
        ranked = sorted(columns, key=lambda name: (-columns[name]["severity"], name))
        drifted = [name for name in ranked if columns[name]["drifted"]]
        share = fraction(len(drifted), len(columns))
        dataset_drift = bool(columns) and share >= self.settings.drift_share
        report = {
            "schema_version": SCHEMA_VERSION,
            "partition": partition,
            "n_rows": self._n_rows,
            "reference_n_rows": self.reference["n_rows"],
            "dataset_drift": dataset_drift,
            "drift_share": share,
            "drift_share_threshold": self.settings.drift_share,
            "n_columns": len(columns),
            "n_drifted_columns": len(drifted),
            "drifted_columns": drifted,
            "overall_status": overall_status(dataset_drift, len(drifted)),
            "columns": {name: columns[name] for name in ranked},
            "scores": self._score_section() if self._saw_scores else None,
            "anomalies": self._anomaly_section(expected_anomaly_rate) if self._saw_flags else None,
            "latents": self._latent_section(),
            "quarantine": _quarantine_section(quarantined_rows, quarantine_reasons, self._n_rows),
        }
        return validate_report(report)

    def _test_for(self, name: str, kind: str) -> DriftTestConfig:
        """Per-column override, else per-type override, else nothing (method and threshold chosen by rule)."""
        per_type = self.settings.numeric if kind == "numeric" else self.settings.categorical
        per_column = self.settings.columns.get(name, DriftTestConfig())
        return DriftTestConfig(method=per_column.method or per_type.method,
                               threshold=per_column.threshold or per_type.threshold)

    def _score_section(self) -> dict:
        state = self._scores
        if state is None:
            return {"method": None, "score": None, "threshold": None, "drifted": False, "statistic": None,
                    "psi": None, "n_rows": self._n_rows, "quantiles": None, "reference_quantiles": None,
                    "mean": None, "reference_mean": None, "detector_threshold": self.reference.get("threshold"),
                    "above_threshold_share": None, "reference_above_threshold_share": None, "histogram": None}
        column = _numeric_column(state, DriftTestConfig(), self.settings)
        summary = state.summary
        reference_counts = np.asarray(summary["counts"])
        detector_threshold = self.reference.get("threshold")
        above = reference_above = None
        if detector_threshold is not None:
            first = int(np.searchsorted(state.edges, detector_threshold, side="right"))
            above = fraction(state.counts[first:].sum(), state.counts.sum())
            reference_above = fraction(reference_counts[first:].sum(), reference_counts.sum())
        return {
            "method": column["method"],
            "score": column["score"],
            "threshold": column["threshold"],
            "drifted": column["drifted"],
            "statistic": column["statistic"],
            "psi": column["psi"],
            "n_rows": state.n_rows,
            "quantiles": _quantiles(state.edges, state.counts, state.sums, SCORE_QUANTILES),
            "reference_quantiles": _quantiles(state.edges, reference_counts, np.asarray(summary["sums"], dtype=float),
                                              SCORE_QUANTILES),
            "mean": column["mean"],
            "reference_mean": column["reference_mean"],
            "detector_threshold": detector_threshold,
            "above_threshold_share": above,
            "reference_above_threshold_share": reference_above,
            "histogram": _score_histogram(state, detector_threshold),
        }

    def _anomaly_section(self, expected_rate: float | None) -> dict:
        """Observed anomaly rate, and a one-sided exact binomial test against the target FPR."""
        n, k = self._n_rows, self._n_flagged
        rate = fraction(k, n)
        p_value = z_score = None
        if expected_rate is not None and n:
            p_value = statistics.binomial_upper_pvalue(k, n, expected_rate)
            z_score = finite((rate - expected_rate) / math.sqrt(expected_rate * (1.0 - expected_rate) / n))
        return {
            "n_rows": n,
            "n_flagged": k,
            "observed_rate": rate,
            "expected_rate": expected_rate,
            "ratio_to_expected": None if not expected_rate else rate / expected_rate,
            "z_score": z_score,
            "p_value": p_value,
            "alpha": self.settings.anomaly_rate_alpha,
            "anomaly_rate_exceeds_expected": p_value is not None and p_value <= self.settings.anomaly_rate_alpha,
        }

    def _latent_section(self) -> dict | None:
        reference = self.reference.get("latents")
        if not reference or not self._latent_rows:
            return None
        settings = self.settings
        return latents.compare_usage(reference, self._latent_fire, self._latent_total, self._latent_rows,
                                     threshold=settings.latent_threshold, min_frequency=settings.latent_min_frequency,
                                     top=settings.latent_top)


# ----------------------------------------------------------------------------------------------------- columns


def _resolve(test: DriftTestConfig, kind: str, reference_rows: int, n_unique: int, settings: DriftConfig) -> tuple[str, float]:
    method = test.method or statistics.choose_method(kind, reference_rows, n_unique, settings.small_reference_rows,
                                                     settings.low_cardinality)
    return method, test.threshold or statistics.DEFAULT_THRESHOLDS[method]


def _numeric_column(state: _NumericState, test: DriftTestConfig, settings: DriftConfig) -> dict:
    summary = state.summary
    reference_counts = np.asarray(summary["counts"], dtype=np.int64)
    reference_sums = np.asarray(summary["sums"], dtype=float)
    present = int(state.counts.sum())
    reference_present = int(reference_counts.sum())
    method, threshold = _resolve(test, "numeric", reference_present, summary["n_unique"], settings)
    # Category-style tests (and PSI) use one bucket per value for low-cardinality columns, else equal-frequency groups.
    per_value = summary["exact"] and summary["n_unique"] <= max(settings.low_cardinality, settings.psi_bins)
    if per_value:
        buckets_reference, buckets_current = reference_counts, state.counts
    else:
        groups = statistics.equal_frequency_groups(reference_counts, settings.psi_bins)
        buckets_reference = statistics.grouped(reference_counts, groups, settings.psi_bins)
        buckets_current = statistics.grouped(state.counts, groups, settings.psi_bins)
    score = statistic = psi = None
    if present and reference_present:
        psi = statistics.psi(buckets_reference / reference_present, buckets_current / present)
        if method == "ks":
            statistic, score = statistics.ks_from_counts(reference_counts, state.counts)
        elif method == "wasserstein":
            statistic = statistics.wasserstein_from_bins(state.edges, reference_counts, reference_sums,
                                                         state.counts, state.sums)
            score = statistics.normalised_wasserstein(statistic, summary["std"])
        elif method == "chisquare":
            statistic, score = statistics.chisquare_from_counts(buckets_reference, buckets_current)
        elif method == "jensenshannon":
            score = statistics.jensenshannon(buckets_reference, buckets_current)
        else:
            score = psi
    mean = finite(state.sums.sum() / present) if present else None
    entry = _column_entry("numeric", method, score, threshold, statistic, psi, state.n_rows, state.n_missing,
                          summary, settings)
    entry.update({
        "mean": mean,
        "reference_mean": summary["mean"],
        "quantiles": _quantiles(state.edges, state.counts, state.sums, SCORE_QUANTILES) if present else None,
        "reference_quantiles": _quantiles(state.edges, reference_counts, reference_sums, SCORE_QUANTILES)
        if reference_present else None,
        "unseen_share": None,
        "unseen_categories": [],
        "plot": _numeric_plot(state, per_value),
    })
    return entry


def _categorical_column(state: _CategoricalState, test: DriftTestConfig, settings: DriftConfig) -> dict:
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
    method, threshold = _resolve(test, "categorical", reference_present, summary["n_unique"], settings)
    score = statistic = psi = None
    if present and reference_present:
        psi = statistics.psi(buckets_reference / reference_present, buckets_current / present)
        if method == "chisquare":
            statistic, score = statistics.chisquare_from_counts(buckets_reference, buckets_current)
        elif method == "jensenshannon":
            score = statistics.jensenshannon(buckets_reference, buckets_current)
        elif method == "psi":
            score = psi
        else:
            raise ValueError(f"method {method!r} does not apply to a categorical column")
    entry = _column_entry("categorical", method, score, threshold, statistic, psi, state.n_rows, n_missing,
                          summary, settings)
    ranked_unseen = sorted(unseen.items(), key=lambda item: (-item[1], item[0]))[:LISTED_UNSEEN]
    entry.update({
        "mean": None,
        "reference_mean": None,
        "quantiles": None,
        "reference_quantiles": None,
        "unseen_share": fraction(unseen_total, present),
        "unseen_categories": [{"category": c, "fraction": fraction(n, present)} for c, n in ranked_unseen],
        "plot": _categorical_plot(categories, reference_counts, current_counts, unseen_total),
    })
    return entry


def _column_entry(kind: str, method: str, score: float | None, threshold: float, statistic: float | None,
                  psi: float | None, n_rows: int, n_missing: int, summary: dict, settings: DriftConfig) -> dict:
    null_share = fraction(n_missing, n_rows)
    reference_null_share = fraction(summary["n_missing"], summary["n_rows"])
    null_drifted = n_rows > 0 and abs(null_share - reference_null_share) >= settings.null_share_threshold
    test_drifted = statistics.is_drifted(method, score, threshold)
    # Sorting key: the test's severity, or for a null-share jump how far it is past its own threshold.
    severity = statistics.severity(method, score, threshold)
    if null_drifted:
        severity = max(severity, abs(null_share - reference_null_share) / settings.null_share_threshold)
    return {
        "kind": kind,
        "method": method,
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


# ----------------------------------------------------------------------------------------------------- pictures


def _cdf_knots(edges: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-linear CDF through the bin edges; the open outer bins get a uniform spread matching their mean."""
    total = counts.sum()
    cumulative = np.cumsum(counts)[:-1] / total
    x, y = list(edges), list(cumulative)
    if edges.size == 0:
        mean = sums[0] / counts[0]
        return np.array([mean, mean]), np.array([0.0, 1.0])
    if counts[0]:
        x.insert(0, min(2 * sums[0] / counts[0] - edges[0], edges[0]))
        y.insert(0, 0.0)
    if counts[-1]:
        x.append(max(2 * sums[-1] / counts[-1] - edges[-1], edges[-1]))
        y.append(1.0)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _quantiles(edges: np.ndarray, counts: np.ndarray, sums: np.ndarray, levels: dict[str, float]) -> dict | None:
    """Quantiles read off the binned CDF (approximate: linear inside each bin)."""
    if counts.sum() == 0:
        return None
    x, y = _cdf_knots(edges, counts, sums)
    # np.interp needs increasing sample points: keep the first knot of every run of equal CDF values.
    keep = np.concatenate([[True], np.diff(y) > 0])
    return {name: finite(np.interp(level, y[keep], x[keep])) for name, level in levels.items()}


def _display_range(state: _NumericState) -> tuple[float, float]:
    reference_counts = np.asarray(state.summary["counts"])
    reference_sums = np.asarray(state.summary["sums"], dtype=float)
    ends = {"low": 0.005, "high": 0.995}
    points = []
    for counts, sums in ((reference_counts, reference_sums), (state.counts, state.sums)):
        if counts.sum():
            quantiles = _quantiles(state.edges, counts, sums, ends)
            points += [quantiles["low"], quantiles["high"]]
    points = [p for p in points if p is not None]
    low, high = min(points), max(points)
    if high <= low:
        high = low + 1.0
        low -= 1.0
    return low, high


def _numeric_plot(state: _NumericState, per_value: bool) -> dict | None:
    """Reference vs current distribution: bars per value (low cardinality) or a density over 30 bins."""
    summary = state.summary
    reference_counts = np.asarray(summary["counts"], dtype=float)
    if reference_counts.sum() == 0 and state.counts.sum() == 0:
        return None
    reference_total = reference_counts.sum() or 1.0
    current_total = state.counts.sum() or 1.0
    if per_value and summary.get("values") is not None and len(summary["values"]) == reference_counts.size:
        return {"type": "bars", "labels": [f"{value:g}" for value in summary["values"]],
                "reference": float_list(reference_counts / reference_total),
                "current": float_list(state.counts / current_total)}
    return _histogram(state, *_display_range(state))


def _skewed(state: _NumericState) -> bool:
    """Long right tail in the reference: (p99.5 - median) > LOG_SCALE_RATIO x (median - p0.5)."""
    counts = np.asarray(state.summary["counts"])
    if counts.sum() == 0:
        return False
    q = _quantiles(state.edges, counts, np.asarray(state.summary["sums"], dtype=float),
                   {"low": 0.005, "median": 0.5, "high": 0.995})
    if None in q.values():
        return False
    return q["high"] - q["median"] > LOG_SCALE_RATIO * max(q["median"] - q["low"], 1e-300)


def _histogram(state: _NumericState, low: float, high: float, allow_log: bool = True) -> dict:
    """Share of each sample in 30 bins over [low, high] (from the binned CDF), and the shares outside.

    Bins are equal on a log scale for positive columns with a long right tail (see ``_skewed``), else linear.
    """
    log = allow_log and low > 0 and _skewed(state)
    display = np.geomspace(low, high, DISPLAY_BINS + 1) if log else np.linspace(low, high, DISPLAY_BINS + 1)
    summary = state.summary
    result = {"type": "histogram", "log": bool(log), "edges": float_list(display)}
    for label, counts, sums in (("reference", np.asarray(summary["counts"], dtype=float),
                                 np.asarray(summary["sums"], dtype=float)),
                                ("current", state.counts.astype(float), state.sums)):
        if counts.sum() == 0:
            result[label], result[f"{label}_outside"] = [0.0] * DISPLAY_BINS, [0.0, 0.0]
            continue
        x, y = _cdf_knots(state.edges, counts, sums)
        cdf = np.interp(display, x, y, left=0.0, right=1.0)
        result[label] = float_list(np.diff(cdf))
        result[f"{label}_outside"] = [finite(cdf[0]), finite(1.0 - cdf[-1])]
    return result


def _categorical_plot(categories: list[str], reference_counts: np.ndarray, current_counts: np.ndarray,
                      unseen: int) -> dict:
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


def _score_histogram(state: _NumericState, detector_threshold: float | None) -> dict | None:
    """Error histogram (reference validation errors vs current) over a range that shows the threshold line."""
    if state.counts.sum() == 0:
        return None
    low, high = _display_range(state)
    if detector_threshold is not None:
        low, high = min(low, detector_threshold), max(high, detector_threshold * 1.1)
    return _histogram(state, low, high, allow_log=False)  # linear: the threshold line reads naturally


# ----------------------------------------------------------------------------------------------------- quarantine


def _quarantine_section(quarantined_rows: int | None, reasons: dict[str, int] | None, valid_rows: int) -> dict | None:
    """Quarantined rows and their reasons; per column from reasons written as ``"column: rule"``."""
    if quarantined_rows is None and not reasons:
        return None
    rows = int(quarantined_rows or 0)
    total = rows + valid_rows
    by_column: dict[str, int] = {}
    for reason, count in (reasons or {}).items():
        column = reason.split(":", 1)[0].strip()
        by_column[column] = by_column.get(column, 0) + int(count)
    return {
        "rows": rows,
        "rate": fraction(rows, total),
        "reasons": {reason: int(count) for reason, count in sorted((reasons or {}).items(), key=lambda i: -i[1])},
        "columns": {column: {"rows": count, "rate": fraction(count, total)}
                    for column, count in sorted(by_column.items(), key=lambda item: -item[1])},
    }


def compare_to_reference(
    reference: dict,
    frame: pl.DataFrame,
    scores: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    expected_anomaly_rate: float | None = None,
    partition: str = "",
    *,
    codes: np.ndarray | None = None,
    settings: DriftConfig | None = None,
    quarantined_rows: int | None = None,
    quarantine_reasons: dict[str, int] | None = None,
) -> dict:
    """One-shot drift report of a whole partition: a :class:`DriftAccumulator` fed one batch."""
    accumulator = DriftAccumulator(reference, settings)
    accumulator.update(frame, scores=scores, flagged=flagged, codes=codes)
    return accumulator.report(partition=partition, quarantined_rows=quarantined_rows,
                              quarantine_reasons=quarantine_reasons, expected_anomaly_rate=expected_anomaly_rate)
