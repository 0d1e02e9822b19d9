"""Turning table columns into model inputs, with fitted state that round-trips through JSON.

`TabularEncoder` maps a validated frame to a numeric matrix: median imputation plus a missing-indicator column
for nullable numerics, and one-hot categoricals whose rare and unseen levels share an "other" column (an
unseen category at scoring time is evidence, so it must land somewhere the model can see it).
`RobustScaler` centres each feature on its median and divides by a robust spread; the detector owns one so that
it works on raw numeric matrices too. Rows are never normalised individually: a row's scale is anomaly evidence.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sae_pipeline.config import ColumnSpec, FeatureConfig

OTHER_LEVEL = "__other__"
MISSING_LEVEL = "__missing__"
_IQR_TO_SIGMA = 1.349  # the interquartile range of a standard normal


class NotFittedError(RuntimeError):
    """A transform was asked of an object that has not been fitted."""


class RobustScaler:
    """Per-feature (x - median) / spread, where spread is IQR/1.349, else the std, else 1.

    The fallbacks matter for binary and near-constant columns, whose IQR is 0: dividing by their std keeps a
    rare 1 visible instead of exploding or vanishing.
    """

    def fit(self, X: np.ndarray) -> RobustScaler:
        """Fit on a NaN-free matrix (impute first: `TabularEncoder` does)."""
        X = np.asarray(X, dtype=np.float64)
        if np.isnan(X).any():
            raise ValueError("RobustScaler got NaN: impute missing values first (TabularEncoder does)")
        q25, median, q75 = np.percentile(X, [25, 50, 75], axis=0)
        spread = (q75 - q25) / _IQR_TO_SIGMA
        std = X.std(axis=0)
        self.center_ = median
        self.scale_ = np.where(spread > 1e-12, spread, np.where(std > 1e-12, std, 1.0))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Scaled X: float32 input stays float32 (what the model computes in), anything else becomes float64."""
        if not hasattr(self, "scale_"):
            raise NotFittedError("RobustScaler is not fitted")
        X = np.asarray(X)
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        return (X.astype(dtype, copy=False) - self.center_.astype(dtype)) / self.scale_.astype(dtype)

    def to_dict(self) -> dict:
        return {"center": self.center_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> RobustScaler:
        scaler = cls()
        scaler.center_ = np.asarray(state["center"], dtype=np.float64)
        scaler.scale_ = np.asarray(state["scale"], dtype=np.float64)
        return scaler


class TabularEncoder:
    """Encode numeric and categorical columns of a polars frame into a float32 matrix.

    Fitted state: `numeric_medians_` (for imputation), `indicator_columns_` (nullable numerics that get a
    missing-indicator feature), `categories_` (kept levels per categorical column), and `feature_names_` with
    `feature_sources_` (the input column each feature comes from, used to explain scores).
    """

    def __init__(self, columns: list[ColumnSpec], settings: FeatureConfig | None = None):
        self.columns = columns
        self.settings = settings or FeatureConfig()

    @property
    def _numeric(self) -> list[ColumnSpec]:
        return [column for column in self.columns if column.role == "numeric"]

    @property
    def _categorical(self) -> list[ColumnSpec]:
        return [column for column in self.columns if column.role == "categorical"]

    @property
    def numeric_columns(self) -> list[str]:
        return [column.name for column in self._numeric]

    @property
    def categorical_columns(self) -> list[str]:
        return [column.name for column in self._categorical]

    def fit(self, frame: pl.DataFrame) -> TabularEncoder:
        if frame.height == 0:
            raise ValueError("cannot fit features on an empty frame")
        self.numeric_medians_ = {}
        for column in self._numeric:
            median = frame.get_column(column.name).cast(pl.Float64).median()
            self.numeric_medians_[column.name] = float(median) if median is not None else 0.0
        self.indicator_columns_ = [column.name for column in self._numeric if column.nullable]
        self.categories_ = {}
        for column in self._categorical:
            counts = (
                self._levels(frame, column.name)
                .value_counts(sort=True, name="count")
                .filter(pl.col("count") >= self.settings.min_category_frequency * frame.height)
                .head(self.settings.max_categories)
            )
            self.categories_[column.name] = sorted(
                level for level in counts.get_column(column.name) if level != OTHER_LEVEL
            )
        self._index_features()
        return self

    def _index_features(self) -> None:
        names, sources = [], []
        for column in self._numeric:
            names.append(column.name)
            sources.append(column.name)
        for name in self.indicator_columns_:
            names.append(f"{name}__missing")
            sources.append(name)
        for column in self._categorical:
            for level in [*self.categories_[column.name], OTHER_LEVEL]:
                names.append(f"{column.name}={level}")
                sources.append(column.name)
        self.feature_names_ = names
        self.feature_sources_ = sources

    @staticmethod
    def _levels(frame: pl.DataFrame, name: str) -> pl.Series:
        return frame.get_column(name).cast(pl.String).fill_null(MISSING_LEVEL)

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        """Return an array of shape (n_rows, n_features) in `feature_names_` order."""
        if not hasattr(self, "feature_names_"):
            raise NotFittedError("TabularEncoder is not fitted")
        # Same order as `_index_features` (the column specs), whatever order the JSON state listed keys in.
        medians = self.numeric_medians_
        expressions = [
            pl.col(c.name).cast(pl.Float64).fill_null(medians[c.name]).fill_nan(medians[c.name]) for c in self._numeric
        ]
        expressions += [
            pl.col(name).is_null().cast(pl.Float64).alias(f"{name}__missing") for name in self.indicator_columns_
        ]
        for column in self._categorical:
            name, levels = column.name, self.categories_[column.name]
            level = pl.col(name).cast(pl.String).fill_null(MISSING_LEVEL)
            expressions += [(level == value).cast(pl.Float64).alias(f"{name}={value}") for value in levels]
            expressions.append((~level.is_in(levels)).cast(pl.Float64).alias(f"{name}={OTHER_LEVEL}"))
        return frame.select(expressions).to_numpy().astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {
            "columns": [column.model_dump() for column in self.columns],
            "settings": self.settings.model_dump(),
            "numeric_medians": self.numeric_medians_,
            "indicator_columns": self.indicator_columns_,
            "categories": self.categories_,
        }

    @classmethod
    def from_dict(cls, state: dict) -> TabularEncoder:
        encoder = cls([ColumnSpec(**column) for column in state["columns"]], FeatureConfig(**state["settings"]))
        encoder.numeric_medians_ = dict(state["numeric_medians"])
        encoder.indicator_columns_ = list(state["indicator_columns"])
        encoder.categories_ = {name: list(levels) for name, levels in state["categories"].items()}
        encoder._index_features()
        return encoder
