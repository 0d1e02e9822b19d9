"""Drift of a scored partition versus the training reference.

`build_reference` summarises the training data once; `compare_to_reference` measures how far a new partition
has moved away from that summary; `render_markdown` turns the comparison into a human-readable report. All
three are pure (no I/O) and exchange plain JSON-serialisable dicts, so the caller decides where they are stored.

Two complementary statistics are reported:

* **PSI** (population stability index), ``sum((cur - ref) * ln(cur / ref))`` over buckets: equal-frequency
  bins of the reference for numeric columns, categories for categorical ones, plus a bucket for nulls. Empty
  buckets are clipped to ``PSI_EPSILON`` so the logarithm stays finite. PSI drives the per-column status
  with the usual rule of thumb: below ``PSI_MODERATE`` (0.1) nothing to see, from ``PSI_MAJOR`` (0.25) on
  the column has shifted enough to distrust the model on it.
* **KS** (Kolmogorov-Smirnov statistic) ``D = sup |F_ref(x) - F_cur(x)|`` for numeric columns, which sees
  shifts hidden inside a single PSI bin. Only 101 reference quantiles are stored, so ``F_ref`` is the
  piecewise-linear CDF through them: D is exact against that approximation, which is within about 0.01 of
  the true reference CDF for continuous data. Purely informative; it does not change the status.

Missing values (nulls, and NaN or infinities in float columns) are treated alike: they are excluded from
the numeric statistics and counted in their own bucket, so every number in the output stays finite.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

#: PSI at or above this is "moderate" drift.
PSI_MODERATE = 0.1
#: PSI at or above this is "major" drift.
PSI_MAJOR = 0.25
#: Floor for bucket fractions so that empty buckets keep PSI finite.
PSI_EPSILON = 1e-4
#: One-sided z-score above which the observed anomaly rate is judged higher than expected.
ANOMALY_RATE_Z_THRESHOLD = 3.0
#: Bucket name for missing categorical values.
NULL_CATEGORY = "__null__"
#: Bucket that pools, at comparison time, every category absent from the reference.
UNSEEN_CATEGORY = "__unseen__"
#: How many categories (current and unseen) a report lists per column.
TOP_CATEGORIES = 5
#: Levels of the stored reference quantiles (0%, 1%, ..., 100%).
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)

STATUS_ORDER = ("ok", "moderate", "major")
_REPORTED_SCORE_QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


# --------------------------------------------------------------------------------------------------- reference


def build_reference(
    frame: pl.DataFrame,
    numeric_columns: list[str],
    categorical_columns: list[str],
    scores: np.ndarray | None = None,
    n_bins: int = 10,
) -> dict:
    """Summarise the training data so later partitions can be compared without keeping the data itself.

    ``scores`` are anomaly scores of held-out reference rows (training rows would look too normal); when
    given they are summarised like a numeric column under ``"scores"``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    overlap = sorted(set(numeric_columns) & set(categorical_columns))
    if overlap:
        raise ValueError(f"columns listed as both numeric and categorical: {overlap}")
    _require_columns(frame, [*numeric_columns, *categorical_columns])

    columns: dict[str, dict] = {}
    for name in numeric_columns:
        columns[name] = {"kind": "numeric", **_summarise_numeric(_numeric_values(frame[name]), n_bins)}
    for name in categorical_columns:
        columns[name] = {"kind": "categorical", **_summarise_categorical(frame[name])}
    return {
        "n_rows": frame.height,
        "n_bins": n_bins,
        "columns": columns,
        "scores": None if scores is None else _summarise_numeric(_as_float_array(scores), n_bins),
    }


def _summarise_numeric(values: np.ndarray, n_bins: int) -> dict:
    """Bins, moments and quantiles of one numeric sample (NaN = missing); shared by columns and scores."""
    present, null_fraction = _split_missing(values)
    if present.size == 0:
        return {"edges": [], "bin_fractions": [0.0], "null_fraction": null_fraction,
                "mean": None, "std": None, "quantiles": None}
    # Inner edges only: the outer bins are open so that values beyond the training range still land somewhere.
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    return {
        "edges": _float_list(edges),
        "bin_fractions": _float_list(_bin_fractions(present, edges)),
        "null_fraction": null_fraction,
        "mean": _mean(present),
        "std": _finite(present.std()),
        "quantiles": _float_list(np.quantile(present, QUANTILE_LEVELS)),
    }


def _summarise_categorical(series: pl.Series) -> dict:
    counts = _category_counts(series)
    total = series.len()
    return {
        "null_fraction": _fraction(counts.get(NULL_CATEGORY, 0), total),
        "frequencies": {category: count / total for category, count in counts.items()},
    }


# --------------------------------------------------------------------------------------------------- comparison


def compare_to_reference(
    reference: dict,
    frame: pl.DataFrame,
    scores: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    expected_anomaly_rate: float | None = None,
    partition: str = "",
) -> dict:
    """Measure the drift of one partition (``frame`` plus its per-row ``scores``/``flagged``) from ``reference``.

    Every column of the reference must be present in ``frame``. The overall status is the worst column
    status; score drift and the anomaly rate are reported alongside but judged separately.
    """
    reference_columns: dict[str, dict] = reference["columns"]
    _require_columns(frame, list(reference_columns))
    for label, per_row in (("scores", scores), ("flagged", flagged)):
        if per_row is not None and len(per_row) != frame.height:
            raise ValueError(f"{label} has {len(per_row)} entries but the frame has {frame.height} rows")

    columns: dict[str, dict] = {}
    for name, summary in reference_columns.items():
        if summary["kind"] == "numeric":
            columns[name] = {"kind": "numeric", **_compare_numeric(summary, _numeric_values(frame[name]))}
        else:
            columns[name] = {"kind": "categorical", **_compare_categorical(summary, frame[name])}

    drifted = sorted((name for name, column in columns.items() if column["status"] != "ok"),
                     key=lambda name: -(columns[name]["psi"] or 0.0))
    return {
        "partition": partition,
        "n_rows": frame.height,
        "reference_n_rows": reference["n_rows"],
        "columns": columns,
        "scores": None if scores is None else _compare_scores(reference.get("scores"), _as_float_array(scores)),
        "anomalies": None if flagged is None else _anomaly_rate(flagged, expected_anomaly_rate),
        "drifted_columns": drifted,
        "overall_status": max((column["status"] for column in columns.values()),
                              key=STATUS_ORDER.index, default="ok"),
    }


def _compare_numeric(summary: dict, values: np.ndarray) -> dict:
    """PSI, KS, nulls and mean of ``values`` against a numeric summary; shared by columns and scores."""
    present, null_fraction = _split_missing(values)
    if values.size == 0:
        psi = None  # an empty partition has no distribution to compare
    else:
        edges = np.asarray(summary["edges"], dtype=float)
        psi = _psi(_with_null_bucket(summary["bin_fractions"], summary["null_fraction"]),
                   _with_null_bucket(_bin_fractions(present, edges), null_fraction))
    quantiles = summary["quantiles"]
    return {
        "psi": psi,
        "ks": None if quantiles is None or present.size == 0 else _ks_statistic(quantiles, present),
        "status": _status(psi),
        "null_fraction": null_fraction,
        "reference_null_fraction": summary["null_fraction"],
        "mean": _mean(present),
        "reference_mean": summary["mean"],
    }


def _compare_categorical(summary: dict, series: pl.Series) -> dict:
    reference_frequencies: dict[str, float] = summary["frequencies"]
    counts = _category_counts(series)
    total = series.len()
    unseen = {category: count for category, count in counts.items() if category not in reference_frequencies}
    unseen_share = _fraction(sum(unseen.values()), total)
    if total == 0:
        psi = None  # an empty partition has no distribution to compare
    else:
        buckets = list(reference_frequencies)
        reference_fractions = [reference_frequencies[c] for c in buckets] + [0.0]
        current_fractions = [counts.get(c, 0) / total for c in buckets] + [unseen_share]
        psi = _psi(reference_fractions, current_fractions)
    return {
        "psi": psi,
        "status": _status(psi),
        "null_fraction": _fraction(counts.get(NULL_CATEGORY, 0), total),
        "reference_null_fraction": summary["null_fraction"],
        "unseen_share": unseen_share,
        "unseen_categories": _most_common(unseen, total),
        "top_categories": _most_common(counts, total),
    }


def _compare_scores(reference_scores: dict | None, scores: np.ndarray) -> dict:
    """Score drift plus p50/p90/p99 now and in the reference; drift fields are None without reference scores."""
    present, _ = _split_missing(scores)
    targets = list(_REPORTED_SCORE_QUANTILES.values())
    if reference_scores is None:
        drift = {"psi": None, "ks": None, "status": None, "mean": _mean(present)}
        reference_quantiles = None
    else:
        drift = _compare_numeric(reference_scores, scores)
        stored = reference_scores["quantiles"]
        # The reference keeps 101 quantiles, not the scores: read p50/p90/p99 off them by interpolation.
        reference_quantiles = None if stored is None else np.interp(targets, QUANTILE_LEVELS, stored)
    return {
        **drift,
        "quantiles": _named_quantiles(np.quantile(present, targets) if present.size else None),
        "reference_quantiles": _named_quantiles(reference_quantiles),
    }


def _named_quantiles(values: np.ndarray | None) -> dict | None:
    if values is None:
        return None
    return {name: _finite(value) for name, value in zip(_REPORTED_SCORE_QUANTILES, values)}


def _anomaly_rate(flagged: np.ndarray, expected_rate: float | None) -> dict:
    """Observed anomaly rate and whether it is significantly above ``expected_rate``.

    Under the null hypothesis each row is flagged independently with probability p0 = ``expected_rate``, so
    the flagged count is Binomial(n, p0). With the normal approximation ``z = (rate - p0) / sqrt(p0 (1 - p0)
    / n)``; the rate "exceeds expected" only when z > ``ANOMALY_RATE_Z_THRESHOLD`` (one-sided, ~0.13% false
    alarms per partition), so ordinary sampling noise around the contamination level does not raise alerts.
    """
    if expected_rate is not None and not 0.0 < expected_rate < 1.0:
        raise ValueError(f"expected_anomaly_rate must be strictly between 0 and 1, got {expected_rate}")
    flags = np.asarray(flagged, dtype=bool)
    n = int(flags.size)
    n_flagged = int(flags.sum())
    rate = _fraction(n_flagged, n)
    z_score = None
    if expected_rate is not None and n > 0:
        z_score = _finite((rate - expected_rate) / math.sqrt(expected_rate * (1.0 - expected_rate) / n))
    return {
        "n_rows": n,
        "n_flagged": n_flagged,
        "observed_rate": rate,
        "expected_rate": expected_rate,
        "z_score": z_score,
        "anomaly_rate_exceeds_expected": z_score is not None and z_score > ANOMALY_RATE_Z_THRESHOLD,
    }


# --------------------------------------------------------------------------------------------------- statistics


def _bin_fractions(present: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of ``present`` in each bin ``(-inf, e1], (e1, e2], ..., (ek, inf)``; zeros for an empty sample."""
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)
    return counts / present.size if present.size else counts.astype(float)


def _with_null_bucket(bin_fractions: list[float] | np.ndarray, null_fraction: float) -> list[float]:
    """Turn fractions of non-null values into fractions of all rows, with nulls as a last bucket."""
    return [fraction * (1.0 - null_fraction) for fraction in bin_fractions] + [null_fraction]


def _psi(reference_fractions: list[float], current_fractions: list[float]) -> float:
    reference = np.maximum(np.asarray(reference_fractions, dtype=float), PSI_EPSILON)
    current = np.maximum(np.asarray(current_fractions, dtype=float), PSI_EPSILON)
    return float(np.sum((current - reference) * np.log(current / reference)))


def _ks_statistic(reference_quantiles: list[float], present: np.ndarray) -> float:
    """sup |F_ref - F_cur| with F_ref piecewise linear through the stored quantiles and F_cur empirical.

    Between two observed values F_cur is flat and F_ref non-decreasing, so the supremum is reached at an
    observed value, either at it or just before it: both sides are compared, with the left limits of both
    CDFs (which matters when F_ref jumps, e.g. for a constant reference column).
    """
    ordered = np.sort(present)
    points = np.unique(ordered)
    at = np.abs(_reference_cdf(reference_quantiles, points, "right")
                - np.searchsorted(ordered, points, side="right") / ordered.size)
    before = np.abs(_reference_cdf(reference_quantiles, points, "left")
                    - np.searchsorted(ordered, points, side="left") / ordered.size)
    return float(max(at.max(), before.max()))


def _reference_cdf(reference_quantiles: list[float], points: np.ndarray, side: str) -> np.ndarray:
    """Piecewise-linear reference CDF at ``points`` ("right") or its left limit there ("left").

    Tied quantiles make vertical steps; ``np.interp`` is undefined on them, so the enclosing segment is
    located explicitly: with ``searchsorted`` its two ends always differ, so there is no division by zero.
    """
    knots = np.asarray(reference_quantiles, dtype=float)
    upper = np.searchsorted(knots, points, side=side)
    cdf = np.where(upper == 0, 0.0, 1.0)
    inside = (upper > 0) & (upper < knots.size)
    high = upper[inside]
    low = high - 1
    position = (points[inside] - knots[low]) / (knots[high] - knots[low])
    cdf[inside] = QUANTILE_LEVELS[low] + position * (QUANTILE_LEVELS[high] - QUANTILE_LEVELS[low])
    return cdf


def _status(psi: float | None) -> str:
    if psi is None or psi < PSI_MODERATE:
        return "ok"
    return "moderate" if psi < PSI_MAJOR else "major"


# --------------------------------------------------------------------------------------------------- helpers


def _require_columns(frame: pl.DataFrame, names: list[str]) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise KeyError(f"column(s) missing from the frame: {', '.join(missing)}")


def _numeric_values(series: pl.Series) -> np.ndarray:
    """Float array with NaN for missing values (polars nulls become NaN)."""
    return _as_float_array(series.cast(pl.Float64).to_numpy())


def _as_float_array(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=float).ravel()


def _split_missing(values: np.ndarray) -> tuple[np.ndarray, float]:
    """The finite values, and the fraction of entries that are missing (NaN or infinite)."""
    present = values[np.isfinite(values)]
    return present, _fraction(values.size - present.size, values.size)


def _mean(present: np.ndarray) -> float | None:
    return _finite(present.mean()) if present.size else None


def _category_counts(series: pl.Series) -> dict[str, int]:
    """Count per category as a string, nulls under ``NULL_CATEGORY`` (so JSON keys stay strings)."""
    counts = series.cast(pl.String).value_counts()
    return {NULL_CATEGORY if category is None else category: int(count)
            for category, count in zip(counts.to_series(0).to_list(), counts.to_series(1).to_list())}


def _most_common(counts: dict[str, int], total: int) -> list[dict]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_CATEGORIES]
    return [{"category": category, "fraction": count / total} for category, count in ranked]


def _fraction(part: int, total: int) -> float:
    return part / total if total else 0.0


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _float_list(values: np.ndarray) -> list[float | None]:
    return [_finite(value) for value in values]


# --------------------------------------------------------------------------------------------------- markdown


def render_markdown(report: dict) -> str:
    """A short human-readable report: verdict first, then the per-column table and the score section."""
    title = report["partition"] or "(unnamed partition)"
    lines = [f"# Drift report: {title}", "", _verdict(report), ""]
    lines += _column_table(report["columns"])
    if report.get("scores"):
        lines += ["", *_score_section(report["scores"])]
    return "\n".join(lines) + "\n"


def _verdict(report: dict) -> str:
    columns = report["columns"]
    sentences = [f"Overall status: **{report['overall_status']}** over {report['n_rows']} rows "
                 f"(reference: {report['reference_n_rows']} rows)."]
    drifted = report["drifted_columns"]
    if drifted:
        listed = ", ".join(f"`{name}` ({columns[name]['status']}, PSI {_number(columns[name]['psi'])})"
                           for name in drifted)
        sentences.append(f"{len(drifted)} of {len(columns)} columns drifted: {listed}.")
    else:
        sentences.append(f"None of the {len(columns)} columns drifted.")
    anomalies = report.get("anomalies")
    if anomalies:
        sentence = f"Anomaly rate {_percent(anomalies['observed_rate'])}"
        if anomalies["expected_rate"] is not None:
            verdict = "above" if anomalies["anomaly_rate_exceeds_expected"] else "consistent with"
            sentence += (f", {verdict} the expected {_percent(anomalies['expected_rate'])}"
                         f" (z = {_number(anomalies['z_score'])})")
        sentences.append(sentence + ".")
    return " ".join(sentences)


def _column_table(columns: dict[str, dict]) -> list[str]:
    rows = ["| Column | Kind | PSI | KS | Null % now | Null % ref | Status |",
            "|---|---|---:|---:|---:|---:|---|"]
    for name, column in sorted(columns.items(), key=lambda item: -(item[1]["psi"] or 0.0)):
        rows.append(f"| {_cell(name)} | {column['kind']} | {_number(column['psi'])} | "
                    f"{_number(column.get('ks'))} | {_percent(column['null_fraction'])} | "
                    f"{_percent(column['reference_null_fraction'])} | {column['status']} |")
    return rows


def _score_section(scores: dict) -> list[str]:
    lines = ["## Anomaly scores", ""]
    if scores["status"] is None:
        lines.append("The reference has no score summary, so score drift is not measured.")
    else:
        lines.append(f"PSI {_number(scores['psi'])}, KS {_number(scores['ks'])}: **{scores['status']}**.")
    current = scores["quantiles"] or {}
    reference = scores["reference_quantiles"] or {}
    lines += ["", "| Quantile | Now | Reference |", "|---|---:|---:|"]
    lines += [f"| {name} | {_number(current.get(name))} | {_number(reference.get(name))} |"
              for name in _REPORTED_SCORE_QUANTILES]
    return lines


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.3g}%"


def _cell(text: str) -> str:
    """Escape the one character that would break a Markdown table cell."""
    return text.replace("|", "\\|")
