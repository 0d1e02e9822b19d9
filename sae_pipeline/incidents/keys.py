"""Row keys: how a flagged row, a reviewed row and a training row are recognised as the same row.

With a timestamp column a row's key is `ENTITY@TIME` (`host-03@2026-11-01T10:05:00`; `@TIME` alone without an entity
column), which survives reruns, rescoring and retraining and can be typed. Rows of one entity with the same time
share a key and are reviewed together. Without a timestamp column (or where it is null) the key is
`PARTITION#POSITION`, the row's position among the partition's valid rows in read order.
"""

from __future__ import annotations

import polars as pl

from sae_pipeline.config import PipelineConfig

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f"


def entity_expr(config: PipelineConfig) -> pl.Expr:
    """Each row's entity as a string (null: the one implicit entity of a config without an entity column)."""
    column = config.entity_column
    return pl.col(column).cast(pl.String) if column else pl.lit(None, dtype=pl.String)


def row_key_expr(config: PipelineConfig, partition: str, position: pl.Expr) -> pl.Expr:
    """Each row's key, for rows of `partition` whose positions among its valid rows are `position`."""
    by_position = pl.lit(f"{partition}#") + position.cast(pl.String)
    stamp = config.timestamp_column
    if stamp is None:
        return by_position
    by_time = pl.concat_str([entity_expr(config).fill_null(""), pl.lit("@"), pl.col(stamp).dt.to_string(TIME_FORMAT)])
    return pl.when(pl.col(stamp).is_not_null()).then(by_time).otherwise(by_position)


def positions(first_position: int) -> pl.Expr:
    """The positions of a batch's rows among the partition's valid rows, the first being `first_position`."""
    return pl.int_range(pl.len(), dtype=pl.Int64) + first_position
