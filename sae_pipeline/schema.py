"""The data contracts: the input schema (built from the config) and the scored-output schema.

Validation is two-staged. Structural problems (a required column missing, a column of the wrong type) make the
whole file unusable and raise `InputSchemaError` naming the file, the column and the rule. Row-level problems
(nulls in required fields, out-of-range or non-finite values) send the offending rows to quarantine with every
rule they broke, so no row is ever silently dropped: rows in = valid rows + quarantined rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from sae_pipeline.column_types import COLUMN_TYPES
from sae_pipeline.config import ColumnSpec, PipelineConfig

QUARANTINE_REASON_COLUMN = "quarantine_reasons"
QUARANTINE_SOURCE_COLUMN = "source_file"

#: The scored-output contract: every scored partition has the input columns plus these, in this order.
SCORE_COLUMNS: dict[str, pl.DataType] = {
    "anomaly_score": pl.Float64(),
    "anomaly_pvalue": pl.Float64(),
    "is_anomaly": pl.Boolean(),
    "top_features": pl.List(pl.String()),
    "model_version": pl.String(),
    "scored_at": pl.Datetime("us", "UTC"),
    "explanation": pl.List(
        pl.Struct(
            {
                "column": pl.String(),
                "value": pl.Float64(),
                "typical": pl.Float64(),
                "level": pl.String(),
                "typical_level": pl.String(),
                "share": pl.Float32(),
            }
        )
    ),
    "context_baseline": pl.String(),
}
#: Null where it does not apply: `context_baseline` without baseline groups in the config.
NULLABLE_SCORE_COLUMNS = ("context_baseline",)


class InputSchemaError(ValueError):
    """A whole input file violates the schema (missing column, wrong type); the message says where and why."""


def conform_columns(frame: pl.DataFrame, config: PipelineConfig, source: str) -> pl.DataFrame:
    """Check presence and types of the configured columns and return them alone, in config order, cast to their
    canonical dtypes (datetimes: naive UTC microseconds). Columns that are not configured are left out, so every
    output table has one schema whatever the input files hold. Raises `InputSchemaError`."""
    missing = [column.name for column in config.columns if column.name not in frame.columns]
    if missing:
        raise InputSchemaError(f"{source}: required column(s) missing: {missing} (rule: column present)")
    casts = []
    for column in config.columns:
        actual = frame.schema[column.name]
        if actual == pl.Null:  # an all-null column carries no type; nullability rules judge it per row
            casts.append(pl.col(column.name).cast(COLUMN_TYPES[column.type].dtype))
            continue
        if not COLUMN_TYPES[column.type].accepts(actual):
            raise InputSchemaError(
                f"{source}: column {column.name!r} has type {actual}, expected {column.type} (rule: column type)"
            )
        if column.type == "datetime" and actual.time_zone is not None:
            # One datetime type per table: zone-aware values become naive UTC, every unit becomes microseconds.
            casts.append(
                pl.col(column.name)
                .dt.convert_time_zone("UTC")
                .dt.replace_time_zone(None)
                .cast(COLUMN_TYPES["datetime"].dtype)
            )
            continue
        casts.append(pl.col(column.name).cast(COLUMN_TYPES[column.type].dtype))
    try:
        return frame.select(casts)
    except pl.exceptions.PolarsError as error:
        raise InputSchemaError(
            f"{source}: cannot cast column(s) to the configured types: {error} (rule: column type)"
        ) from None


def _finite_check() -> pa.Check:
    return pa.Check(
        lambda data: data.lazyframe.select(pl.col(data.key).is_finite() | pl.col(data.key).is_null()),
        name="finite",
        error="finite",
    )


def _column_checks(column: ColumnSpec) -> list[pa.Check]:
    checks = []
    if COLUMN_TYPES[column.type].floating:
        checks.append(_finite_check())
    if column.min is not None:
        checks.append(pa.Check.ge(column.min))
    if column.max is not None:
        checks.append(pa.Check.le(column.max))
    return checks


def input_schema(config: PipelineConfig) -> pa.DataFrameSchema:
    """Row-level rules for the configured columns (run after `conform_columns`)."""
    return pa.DataFrameSchema(
        {
            column.name: pa.Column(
                COLUMN_TYPES[column.type].dtype,
                checks=_column_checks(column),
                nullable=column.nullable,
            )
            for column in config.columns
        },
        name=f"{config.name}-input",
        strict=False,
    )


@dataclass
class ValidationOutcome:
    valid: pl.DataFrame
    quarantined: pl.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows_in": self.valid.height + self.quarantined.height,
            "rows_valid": self.valid.height,
            "rows_quarantined": self.quarantined.height,
        }


def rule_violations(config: PipelineConfig) -> pl.Expr:
    """True for rows that break any row-level rule of `input_schema` (nullability, finiteness, min, max).

    The same rules as the Pandera schema, as one polars expression: a batch for which it is false everywhere (the
    common case) is valid without running Pandera's checks one column at a time. Polars orders NaN above every
    number, as Pandera's checks do, so NaN breaks `max` but not `min` in both.
    """
    broken = []
    for column in config.columns:
        value = pl.col(column.name)
        if not column.nullable:
            broken.append(value.is_null())
        if COLUMN_TYPES[column.type].floating:
            broken.append(~value.is_finite())
        if column.min is not None:
            broken.append(value < column.min)
        if column.max is not None:
            broken.append(value > column.max)
    return pl.any_horizontal([rule.fill_null(False) for rule in broken]) if broken else pl.lit(False)


def surely_valid(frame: pl.DataFrame, config: PipelineConfig) -> bool:
    """True when aggregates of whole columns prove that no row breaks a rule of `rule_violations`: no null where
    none is allowed, a finite sum (no NaN or infinity in it), the minimum and maximum within bounds. One query, 13x
    faster than finding the rows that break a rule in a scoring batch; False means only that rows must be checked.
    Nulls are skipped by every aggregate, as `rule_violations` lets them pass every rule but nullability."""
    aggregates = []
    for column in config.columns:
        value = pl.col(column.name)
        if not column.nullable:
            aggregates.append(value.null_count().alias(f"{column.name}/nulls"))
        if COLUMN_TYPES[column.type].floating:
            aggregates.append(value.sum().alias(f"{column.name}/sum"))
        if column.min is not None:
            aggregates.append(value.min().alias(f"{column.name}/min"))
        if column.max is not None:
            aggregates.append(value.max().alias(f"{column.name}/max"))
    if not aggregates or frame.is_empty():
        return True
    found = frame.select(aggregates).row(0, named=True)
    for column in config.columns:
        name = column.name
        if found.get(f"{name}/nulls", 0) or not math.isfinite(found.get(f"{name}/sum", 0.0)):
            return False
        lowest, highest = found.get(f"{name}/min"), found.get(f"{name}/max")
        if (lowest is not None and lowest < column.min) or (highest is not None and highest > column.max):
            return False
    return True


def validate_frame(frame: pl.DataFrame, config: PipelineConfig, source: str) -> ValidationOutcome:
    """Split a raw frame into valid rows and quarantined rows (with the rules each row broke).

    Pandera judges every row that `rule_violations` suspects and names the rules it broke. The data is validated
    collected, never lazily: a LazyFrame would only get schema checks.
    """
    conformed = conform_columns(frame, config, source)
    row_index = "__row__"
    indexed = conformed.with_row_index(row_index)
    suspects = indexed.clear() if surely_valid(conformed, config) else indexed.filter(rule_violations(config))
    if not suspects.height:  # the common case: every row is valid, and no copy of the batch is needed
        no_rows = conformed.clear().with_columns(
            pl.lit(None, dtype=pl.List(pl.String)).alias(QUARANTINE_REASON_COLUMN),
            pl.lit(source, dtype=pl.String).alias(QUARANTINE_SOURCE_COLUMN),
        )
        return ValidationOutcome(valid=conformed, quarantined=no_rows)
    reasons = pl.DataFrame(schema={row_index: pl.UInt32, QUARANTINE_REASON_COLUMN: pl.List(pl.String)})
    try:
        input_schema(config).validate(suspects.drop(row_index), lazy=True)
    except SchemaErrors as errors:
        failures = errors.failure_cases
        unlocated = failures.filter(pl.col("index").is_null())
        if unlocated.height:
            first = unlocated.row(0, named=True)
            raise InputSchemaError(
                f"{source}: column {first['column']!r} fails rule {first['check']!r} ({first['failure_case']})"
            ) from None
        positions = suspects.select(
            pl.col(row_index).alias("global"), pl.int_range(pl.len(), dtype=pl.UInt32).alias("index")
        )
        reasons = (
            failures.with_columns(pl.col("index").cast(pl.UInt32))
            .join(positions, on="index")
            .select(
                pl.col("global").alias(row_index),
                pl.format("{}: {}", pl.col("column"), pl.col("check")).alias("reason"),
            )
            .unique()
            .group_by(row_index)
            .agg(pl.col("reason").sort().alias(QUARANTINE_REASON_COLUMN))
        )
    flagged = indexed.join(reasons, on=row_index, how="left")
    is_bad = pl.col(QUARANTINE_REASON_COLUMN).is_not_null()
    valid = flagged.filter(~is_bad).drop(row_index, QUARANTINE_REASON_COLUMN)
    quarantined = flagged.filter(is_bad).drop(row_index).with_columns(pl.lit(source).alias(QUARANTINE_SOURCE_COLUMN))
    outcome = ValidationOutcome(valid=valid, quarantined=quarantined)
    if outcome.counts["rows_in"] != frame.height:
        raise AssertionError(f"{source}: row accounting broken: {outcome.counts} vs {frame.height} rows read")
    return outcome


def _arrow_schema(columns: dict[str, pl.DataType]):
    return pl.DataFrame(schema=columns).to_arrow().schema


def input_dtypes(config: PipelineConfig) -> dict[str, pl.DataType]:
    """The configured columns in config order with their canonical dtypes: the leading columns of every output."""
    return {column.name: COLUMN_TYPES[column.type].dtype for column in config.columns}


def score_arrow_schema():
    """The Arrow schema of `SCORE_COLUMNS` alone: the columns scoring appends to a batch's input columns."""
    return _arrow_schema(SCORE_COLUMNS)


def scored_arrow_schema(config: PipelineConfig):
    """The one Arrow schema of every scored partition file: configured columns, then `SCORE_COLUMNS`."""
    return _arrow_schema({**input_dtypes(config), **SCORE_COLUMNS})


def quarantine_arrow_schema(config: PipelineConfig):
    """The one Arrow schema of every quarantine file: configured columns, the reasons, the source file."""
    return _arrow_schema(
        {**input_dtypes(config), QUARANTINE_REASON_COLUMN: pl.List(pl.String()), QUARANTINE_SOURCE_COLUMN: pl.String()}
    )


def _score_columns() -> dict[str, pa.Column]:
    """The scored contract's own columns with their rules."""
    score_checks = {
        "anomaly_score": [_finite_check(), pa.Check.ge(0)],
        "anomaly_pvalue": [pa.Check.gt(0), pa.Check.le(1)],
    }
    return {
        name: pa.Column(dtype, checks=score_checks.get(name, []), nullable=name in NULLABLE_SCORE_COLUMNS)
        for name, dtype in SCORE_COLUMNS.items()
    }


def scored_output_schema(config: PipelineConfig) -> pa.DataFrameSchema:
    """The scored-partition contract that downstream readers rely on (see README, "Scored output")."""
    return pa.DataFrameSchema(
        {**input_schema(config).columns, **_score_columns()}, name=f"{config.name}-scored", strict=False
    )


def scored_output_check(config: PipelineConfig) -> pa.DataFrameSchema:
    """`scored_output_schema` as scoring checks its own output: every column's name and type, and the score
    columns' rules. The input columns' rules are left out: `validate_frame` applied them to these very rows on the
    way in, and running them again cost two thirds of the check (about 0.05 s per partition)."""
    typed_only = {name: pa.Column(dtype, nullable=True) for name, dtype in input_dtypes(config).items()}
    return pa.DataFrameSchema({**typed_only, **_score_columns()}, name=f"{config.name}-scored", strict=False)
