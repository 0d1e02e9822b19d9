"""Rows a review confirmed anomalous, kept out of what a model learns from.

Training samples drop them by key as they are read (`sampling.sample_valid_rows(excluded=...)`), which also keeps
them out of the replay sample and the kNN reference built from that sample. A champion's replay sample was drawn
before the review: `without_confirmed_anomalies` drops them from it before an update replays it.
"""

from __future__ import annotations

import logging

import polars as pl

from sae_pipeline.config import PipelineConfig
from sae_pipeline.incidents.build import committed_partitions
from sae_pipeline.incidents.flagged import flagged_columns, read_flagged
from sae_pipeline.incidents.keys import TIME_FORMAT, entity_expr
from sae_pipeline.incidents.reviews import read_reviews, row_verdicts

logger = logging.getLogger(__name__)


def without_confirmed_anomalies(config: PipelineConfig, replay: pl.DataFrame, confirmed: set[str]) -> pl.DataFrame:
    """`replay` (model input columns) without the rows whose key is in `confirmed`. When the replayed columns hold
    the row key's parts (entity and timestamp: context models), by key; otherwise by value, against the confirmed
    rows recorded in the flagged table (a confirmed row that was never flagged cannot be recognised there)."""
    if not confirmed or not replay.height:
        return replay
    stamp, entity = config.timestamp_column, config.entity_column
    if stamp in replay.columns and (entity is None or entity in replay.columns):
        key = pl.concat_str([entity_expr(config).fill_null(""), pl.lit("@"), pl.col(stamp).dt.to_string(TIME_FORMAT)])
        kept = replay.filter(~key.is_in(list(confirmed)))
    else:
        recorded = flagged_columns(config)
        columns = [name for name in replay.columns if name in recorded]
        rows = read_flagged(config, committed_partitions(config), ["row_key", *columns])
        rows = rows.filter(pl.col("row_key").is_in(list(confirmed))).select(columns).unique()
        kept = replay.join(rows, on=columns, how="anti", nulls_equal=True) if rows.height else replay
    if kept.height < replay.height:
        logger.info("%d replayed row(s) left out: a review confirmed them anomalous", replay.height - kept.height)
    return kept


def reviewed_normal_rows(config: PipelineConfig) -> pl.DataFrame:
    """The flagged rows of the committed partitions whose latest verdict is `normal` (all flagged-table columns)."""
    verdicts = row_verdicts(read_reviews(config))
    keys = verdicts.filter(pl.col("verdict") == "normal").get_column("row_key").to_list()
    if not keys:
        return pl.DataFrame()
    return read_flagged(config, committed_partitions(config)).filter(pl.col("row_key").is_in(keys))
