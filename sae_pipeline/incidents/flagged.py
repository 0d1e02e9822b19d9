"""The flagged-rows table `flagged/<partition>/`: each scored partition's flagged rows with their keys.

Scoring writes it while the partition's scored rows are written and commits it right after them, before the
ledger entry, as one Parquet file that appears whole or not at all and replaces the partition's previous one
(`parquet_io.PartitionWriter`, on disk or S3): a rerun or a rescore replaces the partition's contribution to the
incidents instead of adding to it. Incidents are rebuilt from this table (`build`), never from the whole scored
table.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator

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


#: Bytes of flagged rows a partition keeps in memory while it is scored; beyond them they go to a local file.
FLAGGED_MEMORY_BUDGET = 64 * 2**20


class FlaggedRows:
    """A partition's flagged rows, gathered batch by batch while it is scored and written once its number of valid
    rows (`partition_rows`) is known. They stay in memory up to `memory_budget` bytes, then go on to an Arrow IPC
    file in a local temporary folder: when a model flags most rows (a broken upstream, a model of other data),
    scoring memory stays flat instead of holding the whole partition. `close` (or garbage collection) removes it."""

    def __init__(self, memory_budget: int | None = None):
        self._memory_budget = FLAGGED_MEMORY_BUDGET if memory_budget is None else memory_budget
        self._in_memory: list[pl.DataFrame] = []
        self._in_memory_bytes = 0
        self._folder: tempfile.TemporaryDirectory | None = None
        self._spilled: pa.ipc.RecordBatchStreamWriter | None = None
        self._spilled_schema: pa.Schema | None = None

    def add(self, rows: pl.DataFrame) -> None:
        if rows.is_empty():
            return
        if self._spilled is None and self._in_memory_bytes + rows.estimated_size() <= self._memory_budget:
            self._in_memory.append(rows)
            self._in_memory_bytes += rows.estimated_size()
            return
        if self._spilled is None:
            self._folder = tempfile.TemporaryDirectory(prefix="sae-pipeline-flagged-")
            self._spilled_schema = rows.to_arrow().schema
            self._spilled = pa.ipc.new_stream(f"{self._folder.name}/rows.arrows", self._spilled_schema)
            for piece in self._in_memory:
                self._spilled.write_table(piece.to_arrow().cast(self._spilled_schema))
            self._in_memory, self._in_memory_bytes = [], 0
        self._spilled.write_table(rows.to_arrow().cast(self._spilled_schema))

    def pieces(self) -> Iterator[pl.DataFrame]:
        """The rows in the order they were added: one frame when they fit in memory, else one per spilled batch."""
        if self._spilled is None:
            if self._in_memory:
                yield pl.concat(self._in_memory, how="vertical")
            return
        self._spilled.close()
        # Read through a plain file: given a path, pyarrow maps the file, and every page read stays resident.
        with pa.OSFile(f"{self._folder.name}/rows.arrows") as file, pa.ipc.open_stream(file) as reader:
            for batch in reader:
                yield pl.from_arrow(batch)

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def stage_flagged(
    config: PipelineConfig, partition: str, pieces: Iterable[pl.DataFrame], partition_rows: int
) -> parquet_io.PartitionWriter:
    """`partition`'s flagged rows `pieces`, written but not committed: the caller commits the returned writer once
    the partition's scored rows are (its file then replaces the partition's previous one), or aborts it."""
    columns = flagged_columns(config)
    writer = parquet_io.PartitionWriter(
        config.output.flagged_uri, partition, config.output.staging_uri, arrow_schema(columns)
    )
    try:
        for piece in pieces:
            rows = piece.with_columns(pl.lit(partition_rows, dtype=pl.Int64).alias("partition_rows"))
            writer.write(rows.select(list(columns)).to_arrow())
    except BaseException:
        writer.abort()
        raise
    return writer


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
