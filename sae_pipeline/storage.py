"""Storage addressed by URI: local paths and `s3://` through pyarrow filesystems, whatever the files hold.

Everything that reads or writes the lake, the outputs, the registry and the config goes through here, so one place
decides how a URI maps to a filesystem, how a small object is written without readers seeing it torn, and which
storage errors are worth a retry. Endpoint, region and credentials come from the AWS environment, never from a URI
(the config refuses URI query options), so pyarrow here and boto3 in `s3_uploads` reach the same store as the same
user. Hive table layout is `hive`'s concern, Parquet files `parquet_io`'s.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import uuid

import orjson
import pyarrow.fs as pafs

from sae_pipeline import s3_uploads


class LakeReadError(RuntimeError):
    """A lake file or folder cannot be read; the message names it."""


#: Storage errors that no retry fixes: read-only, full, forbidden, missing.
_PERMANENT_ERRNOS = {
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
}
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


def filesystem_for_files(uris: list[str]) -> tuple[pafs.FileSystem, list[str]]:
    """One filesystem for files on the same storage (a table's data files) and their in-filesystem paths: building a
    filesystem per file would cost a round trip per file on S3."""
    fs, first = filesystem_for(uris[0])
    if "://" not in uris[0]:
        return fs, [first, *(os.path.abspath(uri) for uri in uris[1:])]
    scheme = uris[0].split("://", 1)[0] + "://"
    return fs, [first, *(uri.removeprefix(scheme) for uri in uris[1:])]


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


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


def clear_folder(uri: str) -> None:
    """Delete everything under a folder (e.g. the staging area of crashed writers); nothing if it is absent."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir_contents(path)


def abort_incomplete_uploads(uri: str, initiated_before: dt.datetime) -> int:
    """Abort the incomplete S3 uploads under `uri` begun before `initiated_before` (see
    `s3_uploads.abort_incomplete_uploads`); nothing to do on other storage. Call it only while holding the lease."""
    filesystem, path = filesystem_for(uri)
    if not isinstance(filesystem, pafs.S3FileSystem):
        return 0
    return s3_uploads.abort_incomplete_uploads(path, initiated_before)


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


def json_bytes(payload: dict) -> bytes:
    """`payload` as the indented JSON every file of the project is written as. orjson, because the standard
    library's indented output is its pure-Python encoder: 13 ms for a 32-column drift report, against 0.3 ms.
    NaN and inf are written as null (JSON has neither); numpy scalars and arrays as numbers and lists."""
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def write_json(uri: str, payload: dict) -> None:
    write_bytes(uri, json_bytes(payload))


def read_json(uri: str) -> dict:
    return json.loads(read_bytes(uri))


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())
