"""Parquet partitions: row counts from footers, reading whole or in bounded batches, and all-or-nothing writes.

A partition is always written as one file with a fixed name that appears whole or not at all (a multipart upload
completed at commit on S3, a staged file renamed into place on disk), so readers never see half a partition and a
rerun replaces the partition instead of adding a second copy of its rows. Reads take every data file of the folder
(`hive.data_files`), so partitions written by other tools are read too, with memory bounded by the batch size.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sae_pipeline import s3_uploads
from sae_pipeline.hive import data_files
from sae_pipeline.storage import LakeReadError, filesystem_for, join_uri

logger = logging.getLogger(__name__)

#: The name of the one data file `PartitionWriter` writes in a partition folder.
PARTITION_FILE = "part-0.parquet"


def count_rows(partition_uri: str) -> int:
    """Rows of a partition from its Parquet footers alone (no data read)."""
    fs, folder = filesystem_for(partition_uri)
    return count_file_rows(fs, data_files(fs, folder))


def count_file_rows(fs: pafs.FileSystem, paths: list[str]) -> int:
    """Rows of some Parquet files from their footers alone (no data read)."""
    total = 0
    for path in paths:
        try:
            total += pq.read_metadata(path, filesystem=fs).num_rows
        except (pa.ArrowException, OSError) as error:
            raise LakeReadError(f"cannot read Parquet file {path}: {error}") from error
    return total


def read_partition(partition_uri: str, columns: list[str] | None = None) -> pl.DataFrame:
    """Read every Parquet file of one partition folder (or only `columns`) into one frame, without partition keys."""
    fs, folder = filesystem_for(partition_uri)
    files = data_files(fs, folder)
    if not files:
        raise LakeReadError(f"no data files in partition {partition_uri}")
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path, filesystem=fs, columns=columns))
        except (pa.ArrowException, OSError) as error:
            raise LakeReadError(f"cannot read Parquet file {path}: {error}") from error
    try:
        return pl.concat([pl.from_arrow(table) for table in tables], how="vertical")
    except pl.exceptions.PolarsError as error:
        raise LakeReadError(f"files of partition {partition_uri} have incompatible schemas: {error}") from error


#: Row groups whose column chunks take more than this (compressed) are read through small buffers, not fetched whole.
LARGE_ROW_GROUP_BYTES = 128 * 2**20
#: The read buffers of all columns of such a row group together.
ROW_GROUP_BUFFER_BYTES = 64 * 2**20


def iter_partition_batches(partition_uri: str, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Stream a partition as (file path, record batch) pairs, file after file, at most `batch_rows` rows each.

    Row group by row group: one `iter_batches` over a whole file keeps every pre-buffered column chunk until the
    file is done (memory grew with the file: 760 MB for a 4M-row file), while a call per row group releases them.
    A row group is pre-buffered whole (few, coalesced reads: what object storage needs), unless it is larger than
    `LARGE_ROW_GROUP_BYTES` (Spark's 128 MB row groups stay below), as in files written as one row group;
    those are read through a buffer per column, so memory stays flat (`benchmarks/memory.py --one-row-group`).
    """
    fs, folder = filesystem_for(partition_uri)
    files = data_files(fs, folder)
    if not files:
        raise LakeReadError(f"no data files in partition {partition_uri}")
    yield from iter_file_batches(fs, files, batch_rows)


def iter_file_batches(fs: pafs.FileSystem, paths: list[str], batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Stream Parquet files as (file path, record batch) pairs, as `iter_partition_batches` reads a partition."""
    for path in paths:
        try:
            with fs.open_input_file(path) as handle:
                parquet_file = pq.ParquetFile(handle)
                metadata = parquet_file.metadata
                buffered = None
                for row_group in range(parquet_file.num_row_groups):
                    reader = parquet_file
                    if _compressed_size(metadata.row_group(row_group)) > LARGE_ROW_GROUP_BYTES:
                        if buffered is None:
                            buffer_size = max(64 * 2**10, ROW_GROUP_BUFFER_BYTES // max(1, metadata.num_columns))
                            buffered = pq.ParquetFile(
                                handle, metadata=metadata, pre_buffer=False, buffer_size=buffer_size
                            )
                        reader = buffered
                    for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[row_group]):
                        yield path, batch
        except (pa.ArrowException, OSError) as error:
            raise LakeReadError(f"cannot read Parquet file {path}: {error}") from error


def _compressed_size(row_group: pq.RowGroupMetaData) -> int:
    return sum(row_group.column(index).total_compressed_size for index in range(row_group.num_columns))


#: A flat column is dictionary-encoded when at most this share of its first `DICTIONARY_SAMPLE_ROWS` values are
#: distinct: repeated values (hosts, hours, rounded readings) shrink, while building a dictionary over values that
#: never repeat (measurements, scores, timestamps, ids) costs most of the write and makes the file larger.
DICTIONARY_MAX_DISTINCT_SHARE = 0.5
DICTIONARY_SAMPLE_ROWS = 10_000
#: A column whose first `UNIQUE_PROBE_ROWS` values are more than this share distinct gets no dictionary without
#: counting further: counting 10,000 values of every column cost 25-30 ms per scored partition. Drawn uniformly from
#: D distinct values, 1,000 rows are 98% distinct only for D above ~25,000, where 10,000 rows are 82% distinct.
UNIQUE_PROBE_ROWS = 1_000
UNIQUE_PROBE_SHARE = 0.98


def dictionary_columns(table: pa.Table) -> list[str]:
    """The Parquet column paths of `table` worth a dictionary: flat columns whose first rows repeat values
    (`DICTIONARY_MAX_DISTINCT_SHARE`), and the string leaves of nested columns (names in lists and structs, as in
    the explanations). Writing one scored 60k-row partition of 32 random floats took 0.23 s with Arrow's default
    (a dictionary for every column) and 0.08 s with this choice, for a 27% smaller file; on the sample telemetry,
    whose readings repeat, the file is as small as with the default (BENCHMARKS.md, "third round")."""
    sample = table.slice(0, DICTIONARY_SAMPLE_ROWS)
    chosen = []
    for leaf in _parquet_leaves(table.schema):
        top = leaf.path.split(".")[0] if leaf.path not in table.schema.names else leaf.path
        if pa.types.is_nested(table.schema.field(top).type):
            if leaf.physical_type == "BYTE_ARRAY":
                chosen.append(leaf.path)
            continue
        if _repeats(sample.column(top)):
            chosen.append(leaf.path)
    return chosen


def _repeats(values: pa.ChunkedArray) -> bool:
    """Whether at most `DICTIONARY_MAX_DISTINCT_SHARE` of `values` are distinct, probing the first
    `UNIQUE_PROBE_ROWS` first (see `UNIQUE_PROBE_SHARE`)."""
    probe = values.slice(0, UNIQUE_PROBE_ROWS)
    if len(probe) < len(values) and pc.count_distinct(probe).as_py() > UNIQUE_PROBE_SHARE * len(probe):
        return False
    return bool(len(values)) and pc.count_distinct(values).as_py() <= DICTIONARY_MAX_DISTINCT_SHARE * len(values)


def _parquet_leaves(schema: pa.Schema) -> list[pq.ColumnSchema]:
    """The Parquet leaf columns (path, physical type) that `schema` is written as, from an empty file's footer."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    written = pq.ParquetFile(pa.BufferReader(buffer.getvalue())).schema
    return [written.column(index) for index in range(len(written))]


class PartitionWriter:
    """Write one partition of a table batch by batch, as a single Parquet file that appears whole or not at all.

    On object storage the file is streamed straight to its final key as a multipart upload that only `commit`
    completes (a single object appears atomically; no copy, no size limit); `abort`, or a crash, leaves no object.
    On a local disk it is written under `staging_uri` (outside the table) and renamed into place by `commit`.
    After the commit, data files that older writers left in the partition folder are removed, so a rerun replaces
    the partition instead of adding to it. Crashed writers' debris (staged files, incomplete uploads) is removed by
    `pipeline.clear_staging`.
    """

    def __init__(self, table_uri: str, partition_name: str, staging_uri: str, schema: pa.Schema):
        self.table_uri = table_uri
        self.partition_name = partition_name
        self.schema = schema
        self._fs, table_root = filesystem_for(table_uri)
        self._folder = f"{table_root}/{partition_name}"
        self._final_path = f"{self._folder}/{PARTITION_FILE}"
        self._staging_root = filesystem_for(staging_uri)[1]
        self._staged_path: str | None = None
        self._stream = None
        self._writer = None

    def _open(self):
        if isinstance(self._fs, pafs.S3FileSystem):
            bucket, key = self._final_path.split("/", 1)
            return s3_uploads.MultipartUpload(s3_uploads.s3_client(), bucket, key)
        self._fs.create_dir(self._staging_root, recursive=True)
        self._staged_path = f"{self._staging_root}/{uuid.uuid4().hex}.parquet"
        return self._fs.open_output_stream(self._staged_path)

    def write(self, table: pa.Table) -> None:
        """Append `table` (cast to the schema); the first table written also chooses the dictionary columns."""
        table = table.cast(self.schema)
        if self._writer is None:
            self._stream = self._open()
            self._writer = pq.ParquetWriter(
                self._stream, self.schema, compression="zstd", use_dictionary=dictionary_columns(table)
            )
        self._writer.write_table(table)

    def commit(self) -> str:
        """Publish the partition (an empty file with the schema if nothing was written); return its folder's URI."""
        if self._writer is None:
            self.write(self.schema.empty_table())
        self._writer.close()
        if isinstance(self._stream, s3_uploads.MultipartUpload):
            self._stream.complete()
        else:
            self._stream.close()
            self._fs.create_dir(self._folder, recursive=True)
            self._fs.move(self._staged_path, self._final_path)
        for stale in data_files(self._fs, self._folder, include_empty=True):
            if stale != self._final_path:
                self._fs.delete_file(stale)
        return join_uri(self.table_uri, self.partition_name)

    def abort(self) -> None:
        """Drop what was written: nothing reaches the table."""
        if self._writer is None:
            return
        try:
            self._writer.close()
        finally:
            if isinstance(self._stream, s3_uploads.MultipartUpload):
                try:
                    self._stream.abort()
                except OSError as error:  # keep the error that made us abort; the next run aborts the upload
                    logger.warning("%s (left for the next run's clean-up)", error)
            else:
                self._stream.close()
                if self._fs.get_file_info(self._staged_path).type != pafs.FileType.NotFound:
                    self._fs.delete_file(self._staged_path)
