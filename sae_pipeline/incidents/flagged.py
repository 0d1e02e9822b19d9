"""The flagged-rows table `flagged/<partition>/`: each scored partition's flagged rows with their keys.

Scoring writes it with the partition's other outputs, before the ledger entry, as one Parquet file that appears
whole or not at all and replaces the partition's previous one (`parquet_io.PartitionWriter`, on disk or S3): a
rerun or a rescore replaces the partition's contribution to the incidents instead of adding to it. Incidents are
rebuilt from this table (`build`), never from the whole scored table.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa

from sae_pipeline import hive, parquet_io, storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.incidents.contract import FLAGGED_COLUMNS, arrow_schema
from sae_pipeline.incidents.keys import entity_expr, row_key_expr
from sae_pipeline.schema import SCORE_COLUMNS, input_dtypes

logger = logging.getLogger(__name__)


def flagged_columns(config: PipelineConfig) -> dict[str, pl.DataType]:
    """The flagged table's columns: the scored-output columns, then `FLAGGED_COLUMNS`."""
    return {**input_dtypes(config), **SCORE_COLUMNS, **FLAGGED_COLUMNS}


def flagged_rows(
    scored: pa.Table, flagged: np.ndarray, config: PipelineConfig, partition: str, first_position: int
) -> pl.DataFrame:
    """The `flagged` rows of a batch of scored rows of `partition` (positions among its valid rows from
    `first_position`), with their keys; `partition_rows` is filled in when the partition is written."""
    rows = pl.from_arrow(scored.filter(pa.array(flagged))).with_columns(
        pl.Series("row_position", np.flatnonzero(flagged) + first_position, dtype=pl.Int64)
    )
    return rows.with_columns(
        row_key_expr(config, partition, pl.col("row_position")).alias("row_key"),
        entity_expr(config).alias("incident_entity"),
        pl.lit(partition, dtype=pl.String).alias("source_partition"),
        pl.lit(None, dtype=pl.Int64).alias("partition_rows"),
    )


def write_flagged(config: PipelineConfig, partition: str, pieces: list[pl.DataFrame], partition_rows: int) -> str:
    """Replace `partition`'s flagged rows by `pieces` (an empty file when there are none); return its folder."""
    columns = flagged_columns(config)
    frame = pl.concat(pieces, how="vertical") if pieces else pl.DataFrame(schema=columns)
    frame = frame.with_columns(pl.lit(partition_rows, dtype=pl.Int64).alias("partition_rows")).select(list(columns))
    schema = arrow_schema(columns)
    writer = parquet_io.PartitionWriter(config.output.flagged_uri, partition, config.output.staging_uri, schema)
    try:
        writer.write(frame.to_arrow())
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def delete_flagged(config: PipelineConfig, partition: str) -> None:
    hive.delete_partition(config.output.flagged_uri, partition)


def read_flagged(config: PipelineConfig, partitions: list[str], columns: list[str] | None = None) -> pl.DataFrame:
    """The flagged rows of `partitions` (those scored before this table existed have none: logged)."""
    wanted = columns or list(flagged_columns(config))
    schema = {name: dtype for name, dtype in flagged_columns(config).items() if name in wanted}
    pieces = []
    for name in partitions:
        uri = storage.join_uri(config.output.flagged_uri, name)
        try:
            pieces.append(parquet_io.read_partition(uri, columns=wanted))
        except storage.LakeReadError as error:
            logger.warning("no flagged rows recorded for %s (score it again to add its incidents): %s", name, error)
    frame = pl.concat(pieces, how="vertical") if pieces else pl.DataFrame(schema=schema)
    return frame.select(wanted)
