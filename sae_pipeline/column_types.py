"""The column types a config may declare, in one table.

Each type says which dtype it has in every output, which dtypes of the input files are read as it, whether its
values are floating point (and so must be finite), whether `min`/`max` apply, and which model roles it can play.
The config's `type` field, its consistency rules and the input schema are all derived from this table, so a new
type is one new row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl


@dataclass(frozen=True)
class ColumnType:
    """One declarable column type."""

    name: str
    #: The dtype of the column in every output table (inputs are cast to it).
    dtype: pl.DataType
    #: Whether a file column of this dtype can be read as this type without losing its meaning.
    accepts: Callable[[pl.DataType], bool]
    #: Roles that feed the model that this type can play.
    model_roles: tuple[str, ...] = ()
    floating: bool = False
    bounded: bool = False


def _numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def _integer(dtype: pl.DataType) -> bool:
    return dtype.is_integer()


def _is_string(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


COLUMN_TYPES: dict[str, ColumnType] = {
    kind.name: kind
    for kind in (
        ColumnType("float", pl.Float64(), _numeric, ("numeric",), floating=True, bounded=True),
        # `float32` keeps 4-byte storage in the outputs.
        ColumnType("float32", pl.Float32(), _numeric, ("numeric",), floating=True, bounded=True),
        ColumnType("int", pl.Int64(), _integer, ("numeric", "categorical"), bounded=True),
        ColumnType("string", pl.String(), _is_string, ("categorical",)),
        ColumnType("bool", pl.Boolean(), lambda dtype: dtype == pl.Boolean, ("numeric", "categorical")),
        ColumnType("date", pl.Date(), lambda dtype: dtype == pl.Date),
        # Zone-aware datetimes and every unit are read (and become naive UTC microseconds).
        ColumnType("datetime", pl.Datetime("us"), lambda dtype: isinstance(dtype, pl.Datetime)),
    )
}

#: The `type` field of a column in the config.
ColumnTypeName = Literal[tuple(COLUMN_TYPES)]  # type: ignore[valid-type]


def types_where(predicate: Callable[[ColumnType], bool]) -> list[str]:
    """Names of the types for which `predicate` holds, in table order (for error messages and checks)."""
    return [name for name, kind in COLUMN_TYPES.items() if predicate(kind)]
