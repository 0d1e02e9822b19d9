"""A bounded, seeded sample of valid rows from some partitions, without holding them all in memory.

Training never needs the whole history: each partition contributes rows in proportion to its size (known from
Parquet footers or a table's manifests, without reading data) and is streamed batch by batch; each batch is
validated and only its sampled valid rows are kept. Peak memory is one batch plus the sample, whatever the size
of the lake or of a partition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from sae_pipeline import storage, tables
from sae_pipeline.config import PipelineConfig
from sae_pipeline.context import with_history
from sae_pipeline.features import TabularEncoder
from sae_pipeline.incidents.keys import positions, row_key_expr
from sae_pipeline.records import FailedPartition, PartitionRecord
from sae_pipeline.schema import InputSchemaError, validate_frame


@dataclass
class RowSample:
    frame: pl.DataFrame
    rows_read: int
    rows_valid: int
    partitions: list[str]
    failed: list[FailedPartition]
    #: Valid rows left out because a review confirmed them anomalous (`excluded` keys).
    rows_excluded: int = 0


def sample_valid_rows(
    config: PipelineConfig,
    partitions: list[PartitionRecord],
    max_rows: int,
    seed: int,
    batch_rows: int | None = None,
    excluded: set[str] | frozenset[str] = frozenset(),
) -> RowSample:
    """Up to `max_rows` valid rows drawn from `partitions`, reproducibly.

    Only the columns the model reads are kept (with context: the group and time columns and each entity's recent
    means, computed over the whole partition first), so partitions that differ in other columns still combine. A
    partition that cannot be read or fails the schema is left out and listed in `failed` (the model is trained
    without it, and the next update tries it again). `batch_rows`: rows per streamed batch (default
    `scoring.batch_rows`). Rows whose key (`incidents.keys`) is in `excluded` (rows a review confirmed anomalous) are
    dropped before sampling.
    """
    model_columns = model_input_columns(config)
    batch_rows = batch_rows or config.scoring.batch_rows
    table = tables.source_for(config.lake)
    sizes, failed = {}, []
    for partition in partitions:
        try:
            sizes[partition.name] = table.count_rows(partition)
        except storage.LakeReadError as error:
            failed.append(FailedPartition(partition=partition.name, error=str(error)))
    total = sum(sizes.values())
    share = min(1.0, max_rows / total) if total else 0.0
    pieces, rows_read, rows_valid, rows_excluded = [], 0, 0, 0
    for index, partition in enumerate(partitions):
        if sizes.get(partition.name, 0) == 0:
            continue
        partition_pieces, partition_read, partition_valid, partition_excluded = [], 0, 0, 0
        try:
            for number, (read, valid) in enumerate(_valid_batches(config, partition, batch_rows)):
                position, partition_valid = partition_valid, partition_valid + valid.height
                if excluded:  # keys count positions among every valid row of the partition, as scoring does
                    keys = valid.select(row_key_expr(config, partition.name, positions(position))).to_series()
                    keep = ~keys.is_in(list(excluded))
                    partition_excluded += valid.height - int(keep.sum())
                    valid = valid.filter(keep)
                valid = valid.select(model_columns)
                partition_read += read
                quota = min(valid.height, math.ceil(share * read))
                partition_pieces.append(
                    valid if quota == valid.height else valid.sample(quota, seed=seed + index + number)
                )
        except (storage.LakeReadError, InputSchemaError) as error:
            failed.append(FailedPartition(partition=partition.name, error=str(error)))
            continue
        pieces += partition_pieces
        rows_read += partition_read
        rows_valid += partition_valid
        rows_excluded += partition_excluded
    sample = pl.concat(pieces, how="vertical") if pieces else pl.DataFrame()
    if sample.height > max_rows:
        sample = sample.sample(max_rows, seed=seed)
    failed_names = {failure.partition for failure in failed}
    used = [partition.name for partition in partitions if partition.name not in failed_names]
    return RowSample(sample, rows_read, rows_valid, used, failed, rows_excluded)


def model_input_columns(config: PipelineConfig) -> list[str]:
    """The columns a model trained with this config reads (`TabularEncoder.input_columns`)."""
    return TabularEncoder(config.columns, config.features, config.context, config.timestamp_column).input_columns


def _valid_batches(config: PipelineConfig, partition: PartitionRecord, batch_rows: int):
    """(rows read, their valid rows) batch by batch; with context history, the whole partition as one batch with
    its recent medians (history needs the partition's rows in time order)."""
    batches = tables.source_for(config.lake).iter_batches(partition, batch_rows)
    valid = (
        (batch.num_rows, validate_frame(pl.from_arrow(batch), config, source=source).valid) for source, batch in batches
    )
    if config.context.history is None:
        yield from valid
        return
    read, pieces = 0, []
    for rows, frame in valid:
        read += rows
        pieces.append(frame)
    yield read, with_history(config, pl.concat(pieces), partition)
