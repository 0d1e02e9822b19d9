"""Lake I/O addressed by URI: local paths and `s3://` through pyarrow filesystems (boto3 for S3 partition uploads).

Tables are Hive-style folders (`table/day=2026-11-01/part-0.parquet`) whose partition keys live only in folder
names. A partition is always written as one file with a fixed name that appears whole or not at all (a multipart
upload completed at commit on S3, a staged file renamed into place on disk), so readers never see half a partition
and a rerun replaces the partition instead of adding a second copy of its rows.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sae_pipeline import s3_uploads

logger = logging.getLogger(__name__)

PARTITION_FILE = "part-0.parquet"


class LakeReadError(RuntimeError):
    """A lake file or folder cannot be read; the message names it."""


#: Storage errors that no retry fixes: read-only, full, forbidden, missing.
_PERMANENT_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}
#: What object stores and their clients say when a request may succeed if sent again. Arrow's S3 client spells
#: the codes in capitals (`AWS Error SERVICE_UNAVAILABLE during UploadPart operation`, `INTERNAL_FAILURE`,
#: `NETWORK_CONNECTION ... Empty reply from server`): `tests/reliability/test_storage_faults.py` captures them.
_TRANSIENT_MESSAGE = re.compile(
    r"HTTP status 5\d\d|\b50[0234]\b|Slow_?Down|Service_? ?Unavailable|Internal_?(Error|Failure)|Request_?Time_?out"
    r"|Throttl|NETWORK_CONNECTION|Connection (reset|refused|was closed|aborted)|timed out|Timeout|Temporary failure",
    re.IGNORECASE,
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or an error it wraps) is a storage hiccup that a retry may fix.

    Permanent: bad data, config or model (every `ValueError`), and storage that is read-only, full, forbidden or
    missing (`PermissionError`, `FileNotFoundError`, those errnos), anywhere in the chain. Transient: timeouts, broken
    connections, and errors whose message carries a 5xx status or a throttling / unavailability code. Anything
    else is treated as permanent: retrying an unknown error only delays the report."""
    chain, seen = [], error
    while seen is not None and len(chain) < 16:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for link in chain:
        if isinstance(link, (ValueError, PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return False
        if isinstance(link, OSError) and link.errno in _PERMANENT_ERRNOS:
            return False
    return any(
        isinstance(link, (TimeoutError, ConnectionError))
        or (isinstance(link, OSError) and _TRANSIENT_MESSAGE.search(str(link)) is not None)
        for link in chain
    )


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem and the in-filesystem path of a URI or local path."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


@dataclass(frozen=True, order=True)
class Partition:
    """One Hive partition.

    `values` are the decoded key values (in key order); `name` is the folder path relative to the table exactly
    as it is spelled on storage (e.g. `day=2026-11-01`, or `region=us%20east`), which output tables reuse.
    """

    values: tuple[tuple[str, str], ...]
    name: str = field(compare=False)
    uri: str = field(compare=False)

    def to_record(self) -> dict:
        """A small JSON-able record, what flows pass between tasks."""
        return {"name": self.name, "uri": self.uri, "values": dict(self.values)}

    @classmethod
    def from_record(cls, record: dict) -> Partition:
        return cls(values=tuple(record["values"].items()), name=record["name"], uri=record["uri"])


def _list_dirs(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=False, recursive=False))
    return [info for info in infos if info.type == pafs.FileType.Directory]


#: The value Hive writes for a null key; a partition of nulls cannot be addressed by key and is refused.
HIVE_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT = re.compile(r"^-?\d+$")


def partition_value_error(key: str, value: str, key_type: str) -> str | None:
    """Why a decoded partition value is unusable for its declared type (`date`, `int`, `string`), or None.

    Refused: empty values, Hive's null marker, values that could name another folder once used in a path
    (`..`, `/`, `\\`, control characters) and values that do not parse as the key's type (they would silently
    turn the key into a string column for the whole table)."""
    if value == "":
        return f"{key}: empty partition value"
    if value == HIVE_DEFAULT_PARTITION:
        return f"{key}: null partition value ({HIVE_DEFAULT_PARTITION})"
    if ".." in value or "/" in value or "\\" in value or any(ord(char) < 32 for char in value):
        return f"{key}: partition value {value!r} could escape the table ('..', '/', '\\' or control characters)"
    if key_type == "date":
        try:
            if not _DATE.match(value):
                raise ValueError(value)
            dt.date.fromisoformat(value)
        except ValueError:
            return f"{key}: partition value {value!r} is not a date (YYYY-MM-DD)"
    elif key_type == "int" and not _INT.match(value):
        return f"{key}: partition value {value!r} is not an integer"
    return None


def partition_error(partition: Partition, key_types: dict[str, str]) -> str | None:
    """Why a partition's key values are refused (`partition_value_error`), naming its folder; None if usable."""
    problems = [
        problem
        for key, value in partition.values
        if (problem := partition_value_error(key, value, key_types.get(key, "string"))) is not None
    ]
    if not problems:
        return None
    return f"partition folder {partition.uri} refused: {'; '.join(problems)} (rule: partition key)"


def discover_partitions(table_uri: str, partition_keys: list[str]) -> list[Partition]:
    """Find every `k1=v1/k2=v2/...` folder of a table, sorted by key values.

    Folders that do not follow the key order (and hidden or `_`-prefixed ones) are ignored, as Hive readers do.
    """
    fs, root = filesystem_for(table_uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise LakeReadError(f"lake table not found or not a folder: {table_uri}")
    found: list[Partition] = []

    def walk(path: str, depth: int, values: tuple[tuple[str, str], ...], folders: tuple[str, ...]) -> None:
        if depth == len(partition_keys):
            name = "/".join(folders)
            found.append(Partition(values=values, name=name, uri=join_uri(table_uri, name)))
            return
        for info in _list_dirs(fs, path):
            key, sep, value = info.base_name.partition("=")
            if sep and key == partition_keys[depth]:
                walk(info.path, depth + 1, (*values, (key, unquote(value))), (*folders, info.base_name))

    walk(root, 0, (), ())
    return sorted(found)


def _data_files(fs: pafs.FileSystem, folder: str, include_empty: bool = False) -> list[str]:
    """Data files of a folder as Hive readers see them (no `_`/`.` names); empty ones only if asked."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=False))
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and not info.base_name.startswith(("_", "."))
        and (include_empty or info.size)
    )


def partition_fingerprint(partition_uri: str) -> str:
    """A digest of a partition's data files (names, sizes, modification times): it changes when any file is
    added, removed, rewritten or touched, without reading the data (one listing call, also on S3)."""
    fs, folder = filesystem_for(partition_uri)
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=False))
    listing = sorted(
        f"{info.base_name}:{info.size}:{info.mtime_ns}"
        for info in infos
        if info.type == pafs.FileType.File and not info.base_name.startswith(("_", "."))
    )
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:32]


def count_rows(partition_uri: str) -> int:
    """Rows of a partition from its Parquet footers alone (no data read)."""
    fs, folder = filesystem_for(partition_uri)
    total = 0
    for path in _data_files(fs, folder):
        try:
            total += pq.read_metadata(path, filesystem=fs).num_rows
        except (pa.ArrowException, OSError) as error:
            raise LakeReadError(f"cannot read Parquet file {path}: {error}") from error
    return total


def read_partition(partition_uri: str, columns: list[str] | None = None) -> pl.DataFrame:
    """Read every Parquet file of one partition folder (or only `columns`) into one frame, without partition keys."""
    fs, folder = filesystem_for(partition_uri)
    files = _data_files(fs, folder)
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
    files = _data_files(fs, folder)
    if not files:
        raise LakeReadError(f"no data files in partition {partition_uri}")
    for path in files:
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
                            buffered = pq.ParquetFile(handle, metadata=metadata, pre_buffer=False, buffer_size=buffer_size)
                        reader = buffered
                    for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[row_group]):
                        yield path, batch
        except (pa.ArrowException, OSError) as error:
            raise LakeReadError(f"cannot read Parquet file {path}: {error}") from error


def _compressed_size(row_group: pq.RowGroupMetaData) -> int:
    return sum(row_group.column(index).total_compressed_size for index in range(row_group.num_columns))


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
            return s3_uploads.MultipartUpload(s3_uploads.s3_client(self._fs), bucket, key)
        self._fs.create_dir(self._staging_root, recursive=True)
        self._staged_path = f"{self._staging_root}/{uuid.uuid4().hex}.parquet"
        return self._fs.open_output_stream(self._staged_path)

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._stream = self._open()
            self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd")
        self._writer.write_table(table.cast(self.schema))

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
        for stale in _data_files(self._fs, self._folder, include_empty=True):
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


def abort_incomplete_uploads(uri: str, initiated_before: dt.datetime) -> int:
    """Abort the incomplete S3 uploads under `uri` begun before `initiated_before` (see
    `s3_uploads.abort_incomplete_uploads`); nothing to do on other storage. Call it only while holding the lease."""
    filesystem, path = filesystem_for(uri)
    if not isinstance(filesystem, pafs.S3FileSystem):
        return 0
    return s3_uploads.abort_incomplete_uploads(filesystem, path, initiated_before)


def clear_folder(uri: str) -> None:
    """Delete everything under a folder (e.g. the staging area of crashed writers); nothing if it is absent."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir_contents(path)


def write_partition(frame: pl.DataFrame, table_uri: str, partition_name: str, staging_uri: str) -> str:
    """Publish `frame` as the single data file of one partition (see `PartitionWriter`); return the folder's URI."""
    table = frame.to_arrow()
    writer = PartitionWriter(table_uri, partition_name, staging_uri, table.schema)
    writer.write(table)
    return writer.commit()


def delete_partition(table_uri: str, partition_name: str) -> bool:
    """Remove one partition folder of a table; False when it was not there."""
    fs, root = filesystem_for(table_uri)
    folder = f"{root}/{partition_name}"
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return False
    fs.delete_dir(folder)
    return True


def list_files(uri: str, suffix: str) -> list[str]:
    """URIs of every file below `uri` (recursively) whose name ends with `suffix`; empty if `uri` is absent."""
    fs, root = filesystem_for(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
    return sorted(
        join_uri(uri, info.path[len(root) :])
        for info in infos
        if info.type == pafs.FileType.File and info.base_name.endswith(suffix)
    )


def delete_file(uri: str) -> bool:
    """Remove one file; False when it was not there."""
    fs, path = filesystem_for(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        return False
    return True


def write_bytes(uri: str, payload: bytes) -> None:
    """Write a small object whole (write to a temporary name, then move, so readers never see a torn file)."""
    fs, path = filesystem_for(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(temporary) as stream:
        stream.write(payload)
    fs.move(temporary, path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem_for(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except OSError as error:
        raise LakeReadError(f"cannot read {uri}: {error}") from error


def write_json(uri: str, payload: dict) -> None:
    write_bytes(uri, json.dumps(payload, indent=2, allow_nan=False).encode())


def read_json(uri: str) -> dict:
    return json.loads(read_bytes(uri))


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())
