"""Hive-style Parquet folders as a `TableSource`: the layout rules are `hive`'s, the file reading `parquet_io`'s."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from sae_pipeline import hive, parquet_io
from sae_pipeline.config import LakeConfig
from sae_pipeline.records import PartitionRecord
from sae_pipeline.storage import filesystem_for


class ParquetSource:
    """A folder of `key=value/` partitions; its version is what the folders hold now (there is no history)."""

    def __init__(self, lake: LakeConfig):
        self.lake = lake

    def partition_records(self, as_of: int | None = None) -> list[PartitionRecord]:
        if as_of is not None:
            raise ValueError(
                f"--as-of {as_of}: {self.lake.uri} is a folder of Parquet files, which keeps no versions "
                "(rule: --as-of needs lake.format delta or iceberg)"
            )
        return hive.partition_records(self.lake)

    def iter_batches(self, partition: PartitionRecord, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        return parquet_io.iter_partition_batches(partition.uri, batch_rows)

    def iter_previous_batches(
        self, partition: PartitionRecord, batch_rows: int
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        if partition.previous_uri is None:
            return iter(())
        return parquet_io.iter_partition_batches(partition.previous_uri, batch_rows)

    def count_rows(self, partition: PartitionRecord) -> int:
        return parquet_io.count_rows(partition.uri)

    def read_schema(self, partition: PartitionRecord) -> tuple[str, pa.Schema] | None:
        fs, folder = filesystem_for(partition.uri)
        files = hive.data_files(fs, folder)
        return (files[0], pq.read_schema(files[0], filesystem=fs)) if files else None
