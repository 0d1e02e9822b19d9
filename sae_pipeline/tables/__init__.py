"""The input table behind one small interface, whatever its format: Hive-style Parquet folders, Delta Lake, Iceberg.

Every step that reads the lake (planning, training samples, scoring, the CLI's checks) asks `source_for(lake)` for a
`TableSource` and never looks at files itself. Only a Delta log or an Iceberg snapshot says which files of a table
are live (its folders also hold removed and uncommitted ones), so a source plans from the log or the manifests
alone, without reading data files, and puts the files it found, with the table version, in each
`PartitionRecord`: a partition task reads exactly the version the run planned, on whichever machine it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa

from sae_pipeline.config import LakeConfig
from sae_pipeline.records import PartitionRecord


class TableSource(Protocol):
    def partition_records(self, as_of: int | None = None) -> list[PartitionRecord]:
        """Every partition, in key order, with its fingerprint (refused ones with an `error`), at the table's
        current version or at `as_of` (a Delta version, an Iceberg snapshot id)."""
        ...

    def iter_batches(self, partition: PartitionRecord, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The partition's rows as (source file, batch) pairs of at most `batch_rows` rows, without its keys."""
        ...

    def iter_previous_batches(
        self, partition: PartitionRecord, batch_rows: int
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The rows of the partition before `partition` (its `previous_uri`), at the version `partition` was planned
        at, like `iter_batches`; nothing when it has none (context history continues from them)."""
        ...

    def count_rows(self, partition: PartitionRecord) -> int:
        """The partition's rows from metadata alone (footers or manifests)."""
        ...

    def read_schema(self, partition: PartitionRecord) -> tuple[str, pa.Schema] | None:
        """(where it was read, the schema of the partition's data), from metadata alone; None if it has no files."""
        ...


def source_for(lake: LakeConfig) -> TableSource:
    """The reader of the configured input table (`lake.format`)."""
    if lake.format == "delta":
        from sae_pipeline.tables.delta import DeltaSource

        return DeltaSource(lake)
    if lake.format == "iceberg":
        from sae_pipeline.tables.iceberg import IcebergSource

        return IcebergSource(lake)
    from sae_pipeline.tables.parquet import ParquetSource

    return ParquetSource(lake)


def partition_records(lake: LakeConfig, as_of: int | None = None) -> list[PartitionRecord]:
    """The input table's partitions (see `TableSource.partition_records`)."""
    return source_for(lake).partition_records(as_of)
