"""Delta Lake tables through delta-rs (`deltalake`): the input table's partitions at one version, and the output
tables, where each partition's result is one commit that replaces that partition.

Planning reads only the log (its checkpoint and JSON commits), never a data file: a partition's live files at the
planned version are the log's `add` actions, and its fingerprint is a digest of their paths and sizes. Delta never
rewrites a file in place, so any append, overwrite or delete in a partition changes the fingerprint. So does a
compaction (`OPTIMIZE`), which rewrites files without changing rows: the partitions it touches are scored once more
(same rows, same scores), a price paid rarely, in exchange for never trusting a commit's `dataChange` flag.

Output partitions are written by one `write_deltalake(mode="overwrite", predicate=<the partition's keys>)` per
partition: delta-rs writes the new files, then commits one log entry that removes the
partition's old files and adds the new ones. Until that entry exists readers see the previous version; a writer
that dies before it leaves only unreferenced files, which `vacuum` removes later. On S3, delta-rs commits with
conditional writes (`If-None-Match`), so concurrent committers (this run's partition tasks, or other writers)
never overwrite each other's log entry; stores without conditional writes need delta-rs's DynamoDB locking
(`AWS_S3_LOCKING_PROVIDER=dynamodb`, `DELTA_DYNAMO_TABLE_NAME`) in the environment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from sae_pipeline import hive, parquet_io
from sae_pipeline.config import LakeConfig
from sae_pipeline.records import PartitionRecord
from sae_pipeline.storage import LakeReadError, filesystem_for_files, join_uri
from sae_pipeline.tables.keys import (
    chain_previous,
    check_table_keys,
    partition_name,
    partition_values,
    table_partition_record,
)

#: Arrow types of partition columns, by their `lake.partition_keys` type.
KEY_ARROW_TYPES = {"date": pa.date32(), "int": pa.int64(), "string": pa.string()}
#: Protocol features whose files cannot be read as plain Parquet (rows deleted by vectors, renamed physical columns).
UNSUPPORTED_READER_FEATURES = ("deletionVectors", "columnMapping")


def storage_options(uri: str) -> dict[str, str]:
    """delta-rs takes the endpoint and credentials from the AWS environment like pyarrow and boto3; a plain-HTTP
    endpoint (a local S3 such as MinIO or moto) must also be allowed explicitly."""
    if uri.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        return {"AWS_ALLOW_HTTP": "true"}
    return {}


def open_table(uri: str, version: int | None = None) -> DeltaTable:
    """The Delta table at `uri` (at `version`, else the latest); a missing table or version is a `LakeReadError`."""
    at = f" at version {version}" if version is not None else ""
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(uri))
    except TableNotFoundError:
        raise LakeReadError(f"no Delta table at {uri} (no _delta_log folder with a commit)") from None
    except (DeltaError, OSError) as error:
        raise LakeReadError(f"cannot read Delta table {uri}{at}: {' '.join(str(error).split())}") from error


def _key_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_date(arrow_type):
        return "date"
    return "int" if pa.types.is_integer(arrow_type) else "string"


def _key_text(value: object) -> str:
    """A partition value as Hive spells it in a folder name (a null as Hive's null marker, which is refused)."""
    if value is None:
        return hive.HIVE_DEFAULT_PARTITION
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _fingerprint(files: list[tuple[str, int]]) -> str:
    """A digest of a partition's live files (path, size): Delta never rewrites a file in place."""
    return hashlib.sha256("\n".join(sorted(f"{path}:{size}" for path, size in files)).encode()).hexdigest()[:32]


class DeltaSource:
    """A Delta table's partitions at one version, read from the live files the log lists."""

    def __init__(self, lake: LakeConfig):
        self.lake = lake

    def partition_records(self, as_of: int | None = None) -> list[PartitionRecord]:
        table = open_table(self.lake.uri, as_of)
        self._check_readable(table)
        schema = pa.schema(table.schema().to_arrow())
        keys = list(table.metadata().partition_columns)
        check_table_keys(self.lake, keys, {key: _key_type(schema.field(key).type) for key in keys})
        live = self._live_files(table, keys)
        if not live:
            raise LakeReadError(f"Delta table {self.lake.uri} has no data files at version {table.version()}")
        return chain_previous(
            [
                table_partition_record(
                    self.lake,
                    self.lake.uri,
                    dict(zip(keys, values)),
                    files=sorted(self._file_uri(path) for path, _ in found),
                    fingerprint=_fingerprint(found),
                    version=table.version(),
                )
                for values, found in sorted(live.items())
            ]
        )

    @staticmethod
    def _live_files(table: DeltaTable, keys: list[str]) -> dict[tuple[str, ...], list[tuple[str, int]]]:
        """The log's live files (path, size) by partition values, at the table's version."""
        files: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
        for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
            files[tuple(_key_text(action[f"partition.{key}"]) for key in keys)].append(
                (action["path"], action["size_bytes"])
            )
        return files

    def _check_readable(self, table: DeltaTable) -> None:
        protocol = table.protocol()
        features = set(protocol.reader_features or ())
        mapping = table.metadata().configuration.get("delta.columnMapping.mode", "none")
        unsupported = [feature for feature in UNSUPPORTED_READER_FEATURES if feature in features]
        if mapping != "none" and "columnMapping" not in unsupported:
            unsupported.append("columnMapping")
        if unsupported:
            raise LakeReadError(
                f"Delta table {self.lake.uri} uses {', '.join(unsupported)}, which this pipeline cannot read yet "
                "(rule: lake.format delta reads tables without deletion vectors or column mapping)"
            )

    def _file_uri(self, path: str) -> str:
        """A log path (relative and URL-encoded, or absolute) as the URI of the file."""
        return path if "://" in path or path.startswith("/") else join_uri(self.lake.uri, unquote(path))

    def iter_batches(self, partition: PartitionRecord, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        return self._read(partition.files or [], partition.version, partition.values, batch_rows)

    def iter_previous_batches(
        self, partition: PartitionRecord, batch_rows: int
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        if partition.previous_uri is None:
            return iter(())
        table = open_table(self.lake.uri, partition.version)
        values = partition_values(partition.previous_uri.removeprefix(self.lake.uri.rstrip("/") + "/"))
        found = self._live_files(table, list(values)).get(tuple(values.values()), [])
        return self._read([self._file_uri(path) for path, _ in found], partition.version, values, batch_rows)

    def _read(
        self, files: list[str], version: int | None, values: dict[str, str], batch_rows: int
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Files of one partition at `version`; columns the table gained after a file was written read as nulls in
        that file's rows, as every Delta reader reads them."""
        if not files:
            return
        table_schema = pa.schema(open_table(self.lake.uri, version).schema().to_arrow())
        fs, paths = filesystem_for_files(files)
        for path, batch in parquet_io.iter_file_batches(fs, paths, batch_rows):
            for field in table_schema:
                if field.name not in batch.schema.names and field.name not in values:
                    batch = batch.append_column(field.name, pa.nulls(batch.num_rows, field.type))
            yield path, batch

    def count_rows(self, partition: PartitionRecord) -> int:
        return parquet_io.count_file_rows(*filesystem_for_files(partition.files or []))

    def read_schema(self, partition: PartitionRecord) -> tuple[str, pa.Schema] | None:
        """The table's schema at the planned version, without the partition columns (what `iter_batches` yields)."""
        schema = pa.schema(open_table(self.lake.uri, partition.version).schema().to_arrow())
        return self.lake.uri, pa.schema([field for field in schema if field.name not in partition.values])


def partition_predicate(values: dict[str, str], key_types: dict[str, str]) -> str:
    """The SQL predicate that selects one partition (`day = '2026-11-01' AND region = 'o''k'`)."""
    terms = []
    for key, value in values.items():
        literal = value if key_types.get(key) == "int" else "'" + value.replace("'", "''") + "'"
        terms.append(f"{key} = {literal}")
    return " AND ".join(terms)


def partition_columns(values: dict[str, str], key_types: dict[str, str], rows: int) -> dict[str, pa.Array]:
    """The partition's key columns for `rows` rows, typed by `key_types`."""
    columns = {}
    for key, value in values.items():
        key_type = key_types.get(key, "string")
        typed = dt.date.fromisoformat(value) if key_type == "date" else int(value) if key_type == "int" else value
        columns[key] = pa.array([typed] * rows, KEY_ARROW_TYPES[key_type])
    return columns


def output_schema(schema: pa.Schema, key_types: dict[str, str]) -> pa.Schema:
    """The schema of an output Delta table: the row schema, then the partition keys."""
    return pa.schema([*schema, *(pa.field(key, KEY_ARROW_TYPES[kind]) for key, kind in key_types.items())])


class DeltaPartitionWriter:
    """Write one partition of an output Delta table as one commit replacing it (see the module docstring).

    Batches are spooled to a local Parquet file, and `commit` hands that file to delta-rs in one
    `write_deltalake` call. Streaming batches into delta-rs while they are scored deadlocked: delta-rs pulls a
    Python stream on its few runtime threads, and with several partitions in flight each pull waited on a scoring
    thread that waited on another partition's pull. The spool keeps memory bounded by the batch size at the price
    of a local copy of the partition; nothing is staged on object storage. `abort` drops the spool: delta-rs never
    sees the partition. `metadata` goes into the commit."""

    def __init__(
        self,
        table_uri: str,
        values: dict[str, str],
        key_types: dict[str, str],
        schema: pa.Schema,
        metadata: dict[str, str],
    ):
        self.table_uri = table_uri
        self.values = values
        self.key_types = key_types
        self.row_schema = schema
        self.schema = output_schema(schema, key_types)
        self.metadata = metadata
        self._spool_path: str | None = None
        self._spool: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._spool is None:
            handle, self._spool_path = tempfile.mkstemp(prefix="sae-delta-", suffix=".parquet")
            os.close(handle)
            self._spool = pq.ParquetWriter(self._spool_path, self.schema, compression="lz4")
        keys = partition_columns(self.values, self.key_types, table.num_rows)
        rows = table.cast(self.row_schema)
        self._spool.write_table(pa.Table.from_arrays([*rows.columns, *keys.values()], schema=self.schema))

    def commit(self) -> str:
        """Publish the partition (an empty one if nothing was written): one Delta commit; return its URI."""
        if self._spool is None:
            self.write(self.row_schema.empty_table())
        try:
            self._spool.close()
            ensure_table(self.table_uri, self.schema, list(self.key_types))
            write_deltalake(
                self.table_uri,
                pads.dataset(self._spool_path, format="parquet").scanner().to_reader(),
                mode="overwrite",
                predicate=partition_predicate(self.values, self.key_types),
                storage_options=storage_options(self.table_uri),
                commit_properties=CommitProperties(custom_metadata=self.metadata),
            )
        except DeltaError as error:
            raise LakeReadError(f"cannot commit to Delta table {self.table_uri}: {error}") from error
        finally:
            os.remove(self._spool_path)
        return join_uri(self.table_uri, partition_name(self.values))

    def abort(self) -> None:
        """Drop what was written: no commit reaches the table."""
        if self._spool is None:
            return
        try:
            self._spool.close()
        finally:
            os.remove(self._spool_path)


def ensure_table(uri: str, schema: pa.Schema, partition_by: list[str]) -> None:
    """Create the output table if it does not exist yet; a table another task created meanwhile is fine."""
    try:
        DeltaTable.create(uri, schema, partition_by=partition_by, mode="ignore", storage_options=storage_options(uri))
    except DeltaError:
        open_table(uri)  # created by a concurrent writer: it exists now, or the original error was real


def delete_partition(uri: str, values: dict[str, str], key_types: dict[str, str]) -> bool:
    """Delete one partition's rows from an output table (one commit); False when the table does not exist."""
    try:
        table = DeltaTable(uri, storage_options=storage_options(uri))
    except TableNotFoundError:
        return False
    table.delete(partition_predicate(values, key_types))
    return True


def read_partition(uri: str, values: dict[str, str], columns: list[str] | None = None) -> pl.DataFrame:
    """One partition of an output table (or only `columns`), at its latest version."""
    filters = [(key, "=", value) for key, value in values.items()]
    return pl.from_arrow(open_table(uri).to_pyarrow_table(partitions=filters, columns=columns))


def vacuum(uri: str, retention_hours: int) -> list[str]:
    """Remove the files of an output table that its current version does not reference and that are older than
    `retention_hours` (readers of the current version never need them; time travel further back than that may
    fail). Returns the removed files; nothing when the table does not exist."""
    try:
        table = DeltaTable(uri, storage_options=storage_options(uri))
    except TableNotFoundError:
        return []
    return table.vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False)
