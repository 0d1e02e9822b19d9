"""Small helpers shared by the drift modules: JSON-safe numbers and column extraction."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

#: Bucket name for missing categorical values.
NULL_CATEGORY = "__null__"
#: Bucket that pools, at comparison time, every category absent from the reference.
UNSEEN_CATEGORY = "__unseen__"
#: Bucket that pools, in the reference, categories beyond the MAX_CATEGORIES most frequent.
OTHER_CATEGORY = "__other__"
#: Most categories a reference keeps per column (the rest are pooled as OTHER_CATEGORY).
MAX_CATEGORIES = 1000


def finite(value: Any) -> float | None:
    """A float, or None for NaN/inf/None, so every number in a report is valid strict JSON."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def float_list(values: Any) -> list[float | None]:
    array = np.asarray(values, dtype=float).ravel()
    if np.isfinite(array).all():  # the common case, without a Python call per value
        return array.tolist()
    return [finite(value) for value in array]


def fraction(part: float, total: float) -> float:
    return float(part) / float(total) if total else 0.0


def require_columns(frame: pl.DataFrame, names: list[str]) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise KeyError(f"column(s) missing from the frame: {', '.join(missing)}")


def numeric_values(series: pl.Series) -> np.ndarray:
    """Float64 array with NaN for missing values; zero-copy for a Float64 column without nulls."""
    if series.dtype != pl.Float64 or series.null_count():
        series = series.cast(pl.Float64)
    return series.to_numpy()


def split_missing(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values (no copy when all are finite) and how many entries are missing (NaN or infinite)."""
    values = np.asarray(values, dtype=float).ravel()
    mask = np.isfinite(values)
    if mask.all():
        return values, 0
    present = values[mask]
    return present, int(values.size - present.size)


def category_counts(series: pl.Series) -> dict[str, int]:
    """Count per category as a string, nulls under NULL_CATEGORY (so JSON keys stay strings)."""
    counts = series.cast(pl.String).value_counts()
    return {
        NULL_CATEGORY if category is None else category: int(count)
        for category, count in zip(counts.to_series(0).to_list(), counts.to_series(1).to_list())
    }
