"""The Hive layout of lake tables: which folders are partitions, which of their files are data, which keys are usable.

Tables are Hive-style folders (`table/day=2026-11-01/part-0.parquet`) whose partition keys live only in folder
names. Discovery, key checks, fingerprints, the Parquet readers and the partition writer all take these rules from
here, so that they agree with each other and with Hive readers (polars, pyarrow, Spark) on what a partition is: its
folder name, its decoded key values, and its data files (not `_`/`.`-prefixed markers and checksums).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote

import pyarrow.fs as pafs

from sae_pipeline.config import LakeConfig
from sae_pipeline.records import PartitionRecord
from sae_pipeline.storage import LakeReadError, filesystem_for, join_uri

logger = logging.getLogger(__name__)


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


def _visible_files(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    """Files of a partition folder that Hive readers read: not `_`/`.`-prefixed (`_SUCCESS`, `.crc` checksums)."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=False))
    return [info for info in infos if info.type == pafs.FileType.File and not info.base_name.startswith(("_", "."))]


def data_files(fs: pafs.FileSystem, folder: str, include_empty: bool = False) -> list[str]:
    """Paths of the data files of a partition folder as Hive readers see them, sorted; empty ones only if asked."""
    return sorted(info.path for info in _visible_files(fs, folder) if include_empty or info.size)


def partition_fingerprint(partition_uri: str) -> str:
    """A digest of a partition's data files (names, sizes, modification times): it changes when any file is
    added, removed, rewritten or touched, without reading the data (one listing call, also on S3)."""
    fs, folder = filesystem_for(partition_uri)
    listing = sorted(f"{info.base_name}:{info.size}:{info.mtime_ns}" for info in _visible_files(fs, folder))
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:32]


def delete_partition(table_uri: str, partition_name: str) -> bool:
    """Remove one partition folder of a table; False when it was not there."""
    fs, root = filesystem_for(table_uri)
    folder = f"{root}/{partition_name}"
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return False
    fs.delete_dir(folder)
    return True


def suggest_partition_keys(table_uri: str) -> str:
    """What the lake's folders look like, for an error about partition keys: the keys and types a config would
    need (`date: date`), or what is there instead."""
    fs, root = filesystem_for(table_uri)
    keys: list[tuple[str, str]] = []
    path = root
    while True:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        folders = [info for info in infos if info.type == pafs.FileType.Directory and "=" in info.base_name]
        if not folders:
            break
        by_key = Counter(info.base_name.partition("=")[0] for info in folders)
        key = by_key.most_common(1)[0][0]
        values = [info.base_name.partition("=")[2] for info in folders if info.base_name.startswith(key + "=")]
        keys.append((key, _key_type(values)))
        path = next(info.path for info in folders if info.base_name.startswith(key + "="))
    if keys:
        example = "/".join(f"{key}=..." for key, _ in keys)
        declared = ", ".join(f"{key}: {key_type}" for key, key_type in keys)
        return f"the lake has folders named {example}: set lake.partition_keys to {{{declared}}}"
    names = sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(root, recursive=False)))
    if not names:
        return "the folder is empty"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"it holds no key=value folders (found: {shown}); the lake must be a Hive-style partitioned table"


def _key_type(values: list[str]) -> str:
    if all(_DATE.match(value) for value in values):
        return "date"
    if all(_INT.match(value) for value in values):
        return "int"
    return "string"


def partition_records(lake: LakeConfig) -> list[PartitionRecord]:
    """Records of every partition of the input table `lake`, in key order, each with the fingerprint of its files.

    A partition whose key values do not parse as their declared type, are empty or null, or could escape the table
    comes back with an `error` (naming its folder) and no fingerprint: nothing reads it (`records.split_refused`)."""
    partitions = discover_partitions(lake.uri, list(lake.partition_keys))
    if not partitions:
        expected = "/".join(f"{key}=..." for key in lake.partition_keys)
        raise LakeReadError(
            f"no partitions under {lake.uri} (lake.partition_keys expects folders named {expected}); "
            f"{suggest_partition_keys(lake.uri)}"
        )
    key_types = dict(lake.partition_keys)
    records, previous_uri = [], None
    for partition in partitions:
        found = {"name": partition.name, "uri": partition.uri, "values": dict(partition.values)}
        error = partition_error(partition, key_types)
        if error is not None:  # refused without reading it: the run reports it as a failed partition
            logger.warning("%s", error)
            records.append(PartitionRecord(**found, error=error))
        else:
            fingerprint = partition_fingerprint(partition.uri)
            records.append(PartitionRecord(**found, fingerprint=fingerprint, previous_uri=previous_uri))
            previous_uri = partition.uri
    return records
