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
from sae_pipeline.config import MODEL_ROLES, PipelineConfig
from sae_pipeline.records import FailedPartition, PartitionRecord
from sae_pipeline.schema import InputSchemaError, validate_frame


@dataclass
class RowSample:
    frame: pl.DataFrame
    rows_read: int
    rows_valid: int
    partitions: list[str]
    failed: list[FailedPartition]


def sample_valid_rows(
    config: PipelineConfig, partitions: list[PartitionRecord], max_rows: int, seed: int, batch_rows: int | None = None
) -> RowSample:
    """Up to `max_rows` valid rows drawn from `partitions`, reproducibly.

    Only the columns the model reads are kept, so partitions that differ in other columns still combine. A
    partition that cannot be read or fails the schema is left out and listed in `failed` (the model is trained
    without it, and the next update tries it again). `batch_rows`: rows per streamed batch (default
    `scoring.batch_rows`).
    """
    model_columns = [column.name for column in config.columns_with_role(*MODEL_ROLES)]
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
    pieces, rows_read, rows_valid = [], 0, 0
    for index, partition in enumerate(partitions):
        if sizes.get(partition.name, 0) == 0:
            continue
        partition_pieces, partition_read, partition_valid = [], 0, 0
        try:
            batches = table.iter_batches(partition, batch_rows)
            for number, (source, batch) in enumerate(batches):
                valid = validate_frame(pl.from_arrow(batch), config, source=source).valid.select(model_columns)
                partition_read += batch.num_rows
                partition_valid += valid.height
                quota = min(valid.height, math.ceil(share * batch.num_rows))
                partition_pieces.append(
                    valid if quota == valid.height else valid.sample(quota, seed=seed + index + number)
                )
        except (storage.LakeReadError, InputSchemaError) as error:
            failed.append(FailedPartition(partition=partition.name, error=str(error)))
            continue
        pieces += partition_pieces
        rows_read += partition_read
        rows_valid += partition_valid
    sample = pl.concat(pieces, how="vertical") if pieces else pl.DataFrame()
    if sample.height > max_rows:
        sample = sample.sample(max_rows, seed=seed)
    failed_names = {failure.partition for failure in failed}
    used = [partition.name for partition in partitions if partition.name not in failed_names]
    return RowSample(sample, rows_read, rows_valid, used, failed)
