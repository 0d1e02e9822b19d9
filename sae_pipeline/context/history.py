"""Each entity's recent history: the mean of its previous rows, continued across partition boundaries.

For each numeric column, `<column>__recent` is the median of the non-null values among the entity's previous
`window` rows, in time order (ties kept in file order): a median, so that the rows after a short incident are
judged against the entity's normal rather than against the incident. A partition's first rows take their history
from the end of the previous partition (`partition_tail`), so a partition scores the same whether it is scored
alone, in a backfill, on another worker or again later: its history depends only on the lake, never on what else
the run read.
"""

from __future__ import annotations

import logging

import polars as pl

from sae_pipeline import parquet_io, storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.schema import InputSchemaError, validate_frame

logger = logging.getLogger(__name__)

#: Suffix of the column holding a numeric column's recent median.
RECENT_SUFFIX = "__recent"
_ORDER = "__history_order"


def recent_column(column: str) -> str:
    return f"{column}{RECENT_SUFFIX}"


def _sequence_key(entity: str | None) -> list[str]:
    return [entity] if entity else []


def with_recent_means(
    frame: pl.DataFrame,
    tail: pl.DataFrame | None,
    numeric_columns: list[str],
    entity: str | None,
    timestamp: str,
    window: int,
) -> pl.DataFrame:
    """`frame` (row order kept) plus `<column>__recent` (recent median) for each numeric column (null for an
    entity's first row ever seen). `tail`: the end of the previous partition (`partition_tail`), or None."""
    pieces = [frame.with_row_index(_ORDER).with_columns(pl.col(_ORDER).cast(pl.Int64))]
    if tail is not None and tail.height:
        earlier = tail.select([*_sequence_key(entity), timestamp, *numeric_columns])
        earlier = earlier.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) - pl.len()).alias(_ORDER))
        pieces.insert(0, earlier.cast({c: frame.schema[c] for c in earlier.columns if c in frame.schema}))
    combined = pl.concat(pieces, how="diagonal")
    over = _sequence_key(entity)
    recent = [
        pl.col(c).cast(pl.Float64).shift(1).rolling_median(window, min_samples=1).alias(recent_column(c))
        for c in numeric_columns
    ]
    if over:
        recent = [expression.over(over) for expression in recent]
    ordered = combined.sort([*over, timestamp, _ORDER], nulls_last=False).with_columns(recent)
    recent_names = [recent_column(c) for c in numeric_columns]
    return ordered.filter(pl.col(_ORDER) >= 0).sort(_ORDER).select([*frame.columns, *recent_names])


def partition_tail(frame: pl.DataFrame, entity: str | None, timestamp: str, window: int) -> pl.DataFrame:
    """The last `window` rows of each entity (the whole table is one sequence without an entity): what the next
    partition's first rows need as history."""
    over = _sequence_key(entity)
    ordered = frame.with_row_index(_ORDER).sort([*over, timestamp, _ORDER])
    last = ordered.filter(pl.int_range(pl.len()).reverse().over(over) < window) if over else ordered.tail(window)
    return last.drop(_ORDER)


def previous_tail(config: PipelineConfig, previous_uri: str | None) -> pl.DataFrame | None:
    """The end of the previous partition (`partition_tail` of its valid rows), or None when there is none. A
    previous partition that cannot be read only costs its rows' history (logged): the partition is still scored."""
    history, timestamp = config.context.history, config.timestamp_column
    if previous_uri is None or history is None or timestamp is None:
        return None
    columns = list(dict.fromkeys([*_sequence_key(config.context.entity), timestamp, *_numeric_columns(config)]))
    pieces = []
    try:
        for source, batch in parquet_io.iter_partition_batches(previous_uri, config.scoring.batch_rows):
            pieces.append(validate_frame(pl.from_arrow(batch), config, source=source).valid.select(columns))
    except (storage.LakeReadError, InputSchemaError) as error:
        logger.warning("history: the previous partition cannot be read, its rows give no history: %s", error)
        return None
    if not pieces:
        return None
    return partition_tail(pl.concat(pieces), config.context.entity, timestamp, history.window)


def with_history(config: PipelineConfig, valid: pl.DataFrame, previous_uri: str | None) -> pl.DataFrame:
    """A partition's valid rows with the recent medians the encoder reads (unchanged without `context.history`)."""
    history, timestamp = config.context.history, config.timestamp_column
    if history is None or timestamp is None:
        return valid
    tail = previous_tail(config, previous_uri)
    return with_recent_means(valid, tail, _numeric_columns(config), config.context.entity, timestamp, history.window)


def _numeric_columns(config: PipelineConfig) -> list[str]:
    return [column.name for column in config.columns_with_role("numeric")]
