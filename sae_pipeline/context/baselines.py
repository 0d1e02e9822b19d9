"""What is normal for each group of rows, learned at training and stored with the model as JSON.

For every numeric column: each group's median and robust spread, and the fleet's (all training rows). A row is
then judged by how far its value is from its group's median in units of its group's spread, so a host that
always runs hot scores like any other host, and one that just started to does not. Groups with fewer than
`min_group_rows` training rows, and groups never seen, use the fleet's statistics (and say so: `BASELINE_*`).

With a calendar, a fleet-wide profile of those relative values by hour of day (and by weekday) is learned as well
and subtracted, so 03:00 and 15:00 each have their own normal. Null rates of nullable columns are kept per group
too: a null at its group's usual rate is no evidence (the encoder turns only rare nulls into a signal).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sae_pipeline.config import CalendarFeature

BASELINE_OWN = "own"
BASELINE_FEW_ROWS = "fleet:few_rows"
BASELINE_NEW_GROUP = "fleet:new_group"
#: A null is evidence only where its group's training null rate is below this.
RARE_NULL_RATE = 0.001
#: Pseudo-rows of the fleet's null rate mixed into each group's, so a small group's rate is not taken as exact.
_NULL_RATE_PRIOR_ROWS = 50
#: A group's spread is at least this share of the fleet's: a nearly constant group must not turn noise into alarms.
_MIN_SPREAD_SHARE = 0.1
#: A calendar bucket (an hour, a weekday) needs this many training rows to get its own profile value.
_MIN_BUCKET_ROWS = 20
_IQR_TO_SIGMA = 1.349
_MISSING_KEY = "__missing__"
_PERIODS = {"hour_of_day": 24, "day_of_week": 7}


def robust_spread(q25: np.ndarray, q75: np.ndarray, std: np.ndarray) -> np.ndarray:
    """IQR/1.349 where positive, else the standard deviation, else 1 (never 0, never NaN)."""
    spread = np.where(np.nan_to_num(q75 - q25) > 1e-12, (q75 - q25) / _IQR_TO_SIGMA, np.nan_to_num(std))
    return np.where(spread > 1e-12, spread, 1.0)


def float_values(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """The named columns as float64 (NaN for nulls), shape (n_rows, len(names)), also when names is empty."""
    if not names:
        return np.zeros((frame.height, 0))
    return frame.select(names).cast(pl.Float64).to_numpy().reshape(frame.height, len(names))


def calendar_buckets(timestamps: pl.Series, feature: CalendarFeature) -> np.ndarray:
    """The bucket of each timestamp: hour 0-23 or weekday 0-6 (Monday 0); -1 where the timestamp is null."""
    parts = timestamps.dt.hour() if feature == "hour_of_day" else timestamps.dt.weekday() - 1
    return parts.fill_null(-1).cast(pl.Int64).to_numpy()


class GroupBaselines:
    """Per-group and fleet statistics of numeric columns, calendar profiles and null rates (see module doc).

    Fitted state: `keys_` (groups with their own baseline), `few_rows_keys_` (seen, too few rows), `medians_` and
    `spreads_` of shape (len(keys_) + 1, n_numeric) whose last row is the fleet, `null_rates_` of shape
    (len(keys_) + 1, n_nullable), and `profiles_` (calendar feature -> array (period, n_numeric)).
    """

    def __init__(
        self,
        group_columns: list[str],
        numeric_columns: list[str],
        nullable_columns: list[str],
        min_group_rows: int,
        calendar: list[CalendarFeature] = (),
        timestamp: str | None = None,
    ):
        self.group_columns = list(group_columns)
        self.numeric_columns = list(numeric_columns)
        self.nullable_columns = list(nullable_columns)
        self.min_group_rows = min_group_rows
        self.calendar = list(calendar)
        self.timestamp = timestamp

    # --- fitting ---------------------------------------------------------------------------------------------

    def fit(self, frame: pl.DataFrame) -> GroupBaselines:
        fleet = self._statistics(frame)
        keys, few = [], []
        medians, spreads, null_rates = fleet["medians"][None], fleet["spreads"][None], fleet["null_rates"][None]
        if self.group_columns:
            grouped = frame.with_columns(self.group_keys(frame).alias("__group")).group_by(
                "__group", maintain_order=True
            )
            per_group = grouped.agg(
                pl.len().alias("__rows"),
                *[pl.col(c).median().alias(f"{c}__median") for c in self.numeric_columns],
                *[pl.col(c).quantile(0.25).alias(f"{c}__q25") for c in self.numeric_columns],
                *[pl.col(c).quantile(0.75).alias(f"{c}__q75") for c in self.numeric_columns],
                *[pl.col(c).std().alias(f"{c}__std") for c in self.numeric_columns],
                *[pl.col(c).null_count().alias(f"{c}__nulls") for c in self.nullable_columns],
            ).sort("__group")
            enough = per_group.filter(pl.col("__rows") >= self.min_group_rows)
            keys = enough.get_column("__group").to_list()
            few = per_group.filter(pl.col("__rows") < self.min_group_rows).get_column("__group").to_list()
            medians = np.vstack([self._group_medians(enough, fleet["medians"]), medians])
            spreads = np.vstack([self._group_spreads(enough, fleet["spreads"]), spreads])
            null_rates = np.vstack([self._group_null_rates(enough, fleet["null_rates"]), null_rates])
        self.keys_, self.few_rows_keys_ = keys, few
        self.medians_, self.spreads_, self.null_rates_ = medians, spreads, null_rates
        self.profiles_ = {}
        if self.calendar:
            self._fit_profiles(frame)
        return self

    def _statistics(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        numeric = frame.select(self.numeric_columns).cast(pl.Float64)
        q25 = numeric.quantile(0.25).to_numpy().ravel() if self.numeric_columns else np.zeros(0)
        q75 = numeric.quantile(0.75).to_numpy().ravel() if self.numeric_columns else np.zeros(0)
        std = numeric.std().to_numpy().ravel() if self.numeric_columns else np.zeros(0)
        medians = numeric.median().to_numpy().ravel() if self.numeric_columns else np.zeros(0)
        nulls = np.array([frame.get_column(c).null_count() for c in self.nullable_columns], dtype=np.float64)
        return {
            "medians": np.nan_to_num(medians.astype(np.float64)),
            "spreads": robust_spread(q25, q75, std),
            "null_rates": nulls / max(frame.height, 1),
        }

    @staticmethod
    def _matrix(groups: pl.DataFrame, names: list[str]) -> np.ndarray:
        """The named per-group statistics as an array of shape (n_groups, len(names)), also when names is empty."""
        if not names:
            return np.zeros((groups.height, 0))
        return groups.select(names).cast(pl.Float64).to_numpy().reshape(groups.height, len(names))

    def _group_medians(self, groups: pl.DataFrame, fleet: np.ndarray) -> np.ndarray:
        values = self._matrix(groups, [f"{c}__median" for c in self.numeric_columns])
        return np.where(np.isnan(values), fleet[None], values)

    def _group_spreads(self, groups: pl.DataFrame, fleet: np.ndarray) -> np.ndarray:
        def column(suffix: str) -> np.ndarray:
            return self._matrix(groups, [f"{c}__{suffix}" for c in self.numeric_columns])

        spread = robust_spread(column("q25"), column("q75"), column("std"))
        return np.maximum(spread, _MIN_SPREAD_SHARE * fleet[None])

    def _group_null_rates(self, groups: pl.DataFrame, fleet: np.ndarray) -> np.ndarray:
        nulls = self._matrix(groups, [f"{c}__nulls" for c in self.nullable_columns])
        rows = groups.get_column("__rows").cast(pl.Float64).to_numpy()[:, None]
        return (nulls + _NULL_RATE_PRIOR_ROWS * fleet[None]) / (rows + _NULL_RATE_PRIOR_ROWS)

    def _fit_profiles(self, frame: pl.DataFrame) -> None:
        """Fleet-wide medians of the group-relative values per calendar bucket, each fitted on what the previous
        calendar features left over (hour of day first, then weekday)."""
        rows = self.lookup(frame)[0]
        residual = self._standardised(float_values(frame, self.numeric_columns), rows)
        for feature in self.calendar:
            buckets = calendar_buckets(frame.get_column(self.timestamp), feature)
            profile = np.zeros((_PERIODS[feature], len(self.numeric_columns)))
            for bucket in range(_PERIODS[feature]):
                chosen = residual[buckets == bucket]
                if chosen.shape[0] >= _MIN_BUCKET_ROWS:
                    with np.errstate(all="ignore"):
                        profile[bucket] = np.nan_to_num(np.nanmedian(chosen, axis=0))
            self.profiles_[feature] = profile
            residual = residual - self._profile_values(profile, buckets)

    # --- applying --------------------------------------------------------------------------------------------

    def group_keys(self, frame: pl.DataFrame) -> pl.Series:
        """Each row's group as one string: the value, or `column=value|...` when several columns form groups."""
        values = [pl.col(c).cast(pl.String).fill_null(_MISSING_KEY) for c in self.group_columns]
        if len(values) == 1:
            return frame.select(values[0].alias("group")).to_series()
        labelled = [pl.concat_str(pl.lit(f"{c}="), value) for c, value in zip(self.group_columns, values)]
        return frame.select(pl.concat_str(labelled, separator="|").alias("group")).to_series()

    def lookup(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """(each row's baseline: an index into `medians_`, whose last row is the fleet; each row's `BASELINE_*`
        status, or None when there are no groups)."""
        fleet = len(self.keys_)
        if not self.group_columns:
            return np.full(frame.height, fleet, dtype=np.int64), None
        keys = self.group_keys(frame)
        own = {key: index for index, key in enumerate(self.keys_)}
        rows = keys.replace_strict(own, default=fleet, return_dtype=pl.Int64).to_numpy()
        few = keys.is_in(self.few_rows_keys_).to_numpy()
        status = np.where(rows < fleet, BASELINE_OWN, np.where(few, BASELINE_FEW_ROWS, BASELINE_NEW_GROUP))
        return rows, status

    def _of_rows(self, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`table`'s row for each row's baseline: without group columns every row has the fleet's, so a read-only
        view of that row instead of a copy per row (same values, no (n_rows x n_columns) gather)."""
        if not self.group_columns:
            return np.broadcast_to(table[-1], (rows.size, table.shape[1]))
        return table[rows]

    def _standardised(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return (values - self._of_rows(self.medians_, rows)) / self._of_rows(self.spreads_, rows)

    @staticmethod
    def _profile_values(profile: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """The profile's value for each row's bucket (0 where the timestamp is null)."""
        return np.where((buckets >= 0)[:, None], profile[np.clip(buckets, 0, None)], 0.0)

    def _calendar_offset(self, frame: pl.DataFrame) -> np.ndarray:
        """Sum of the calendar profiles for each row, in units of its group's spread."""
        offset = np.zeros((frame.height, len(self.numeric_columns)))
        for feature, profile in self.profiles_.items():
            offset += self._profile_values(profile, calendar_buckets(frame.get_column(self.timestamp), feature))
        return offset

    def relative(self, values: np.ndarray, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        """How far each numeric value (`values`: `float_values` of the numeric columns of `frame`) is from what is
        normal for its group (and calendar bucket), in units of the group's spread, shape (n_rows, n_numeric); NaN
        where the value is null."""
        standardised = self._standardised(values, rows)
        return standardised - self._calendar_offset(frame) if self.profiles_ else standardised

    def expected(self, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        """The typical value of each numeric column for each row's group and calendar bucket, in its own units."""
        medians = self._of_rows(self.medians_, rows)
        if not self.profiles_:
            return medians
        return medians + self._calendar_offset(frame) * self._of_rows(self.spreads_, rows)

    def spreads(self, rows: np.ndarray) -> np.ndarray:
        return self._of_rows(self.spreads_, rows)

    def rare_nulls(self, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Boolean (n_rows, n_nullable): nulls in groups whose usual null rate for that column is below
        `RARE_NULL_RATE` (the only nulls that are evidence)."""
        if not self.nullable_columns:
            return np.zeros((frame.height, 0), dtype=bool)
        nulls = frame.select([pl.col(c).is_null() for c in self.nullable_columns]).to_numpy()
        return nulls.reshape(frame.height, len(self.nullable_columns)) & (
            self._of_rows(self.null_rates_, rows) < RARE_NULL_RATE
        )

    def group_null_rates(self, rows: np.ndarray) -> np.ndarray:
        return self._of_rows(self.null_rates_, rows)

    # --- JSON ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "group_columns": self.group_columns,
            "numeric_columns": self.numeric_columns,
            "nullable_columns": self.nullable_columns,
            "min_group_rows": self.min_group_rows,
            "calendar": self.calendar,
            "timestamp": self.timestamp,
            "keys": self.keys_,
            "few_rows_keys": self.few_rows_keys_,
            "medians": self.medians_.tolist(),
            "spreads": self.spreads_.tolist(),
            "null_rates": self.null_rates_.tolist(),
            "profiles": {feature: profile.tolist() for feature, profile in self.profiles_.items()},
        }

    @classmethod
    def from_dict(cls, state: dict) -> GroupBaselines:
        baselines = cls(
            state["group_columns"],
            state["numeric_columns"],
            state["nullable_columns"],
            state["min_group_rows"],
            state["calendar"],
            state["timestamp"],
        )
        width, nullable = len(baselines.numeric_columns), len(baselines.nullable_columns)
        baselines.keys_ = list(state["keys"])
        baselines.few_rows_keys_ = list(state["few_rows_keys"])
        rows = len(baselines.keys_) + 1  # the groups, then the fleet
        baselines.medians_ = np.asarray(state["medians"], dtype=np.float64).reshape(rows, width)
        baselines.spreads_ = np.asarray(state["spreads"], dtype=np.float64).reshape(rows, width)
        baselines.null_rates_ = np.asarray(state["null_rates"], dtype=np.float64).reshape(rows, nullable)
        baselines.profiles_ = {
            feature: np.asarray(profile, dtype=np.float64).reshape(_PERIODS[feature], width)
            for feature, profile in state["profiles"].items()
        }
        return baselines
