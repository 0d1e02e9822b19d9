"""Writing Parquet files to S3 as multipart uploads that appear whole at commit or never (boto3).

pyarrow's S3 output stream completes its upload when it is closed, even after an error, and has no abort, so a
partition written straight to its final key with it could appear half-written. `MultipartUpload` is a writable
stream that only `complete` makes visible. boto3 resolves endpoint, region and credentials from the same AWS
environment as pyarrow (storage URIs carry no options: the config refuses them), and botocore's debug logs have the
credentials in them redacted.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import threading

from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

#: Size of the parts of an S3 upload (S3 wants at least 5 MiB but for the last): memory per writer, at most.
UPLOAD_PART_BYTES = 8 * 1024 * 1024


def s3_client():
    """A boto3 client configured by boto3's own resolution of the AWS environment, which pyarrow reads too, so both
    talk to the same store as the same user: endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`), region
    (`AWS_DEFAULT_REGION`, `AWS_REGION`, the profile), credentials (environment, profile, instance role).
    `AWS_MAX_ATTEMPTS` sets how often a request is sent before its error reaches the caller (default 5)."""
    import boto3
    import botocore.session
    from botocore.config import Config

    # A new session per client resolves the settings afresh, as pyarrow does per filesystem; sharing the loader of
    # service models keeps that cheap (~15 ms instead of ~130 ms). Sessions are not thread-safe: one at a time.
    with _BOTO3_SETUP_LOCK:
        global _botocore_loader
        session = botocore.session.Session()
        if _botocore_loader is None:
            _botocore_loader = session.get_component("data_loader")
            for name in _BOTOCORE_LOGGERS_WITH_CREDENTIALS:
                logging.getLogger(name).addFilter(_redact_credentials)
        session.register_component("data_loader", _botocore_loader)
        return boto3.session.Session(botocore_session=session).client(
            "s3",
            # About the few seconds of re-sends Arrow's client makes; longer outages reach the task retries.
            config=Config(
                retries={"mode": "standard", "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", 5))}
            ),
        )


_BOTO3_SETUP_LOCK = threading.Lock()
_botocore_loader = None
#: botocore's DEBUG records that carry the access key id (`Authorization: ... Credential=KEY/...`) or the session
#: token (`X-Amz-Security-Token`, and the canonical request that is signed).
_BOTOCORE_LOGGERS_WITH_CREDENTIALS = ("botocore.endpoint", "botocore.auth")
_CREDENTIAL_IN_LOG = re.compile(
    r"(Credential=)[^/\s,'\"]+|(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\",\s]+", re.IGNORECASE
)


def _redact_credentials(record: logging.LogRecord) -> bool:
    """Keep botocore's DEBUG records, with the key id and session token in them replaced by `<redacted>`."""
    record.msg = _CREDENTIAL_IN_LOG.sub(
        lambda match: (match.group(1) or match.group(2)) + "<redacted>", record.getMessage()
    )
    record.args = ()
    return True


def storage_error(error: Exception, action: str, bucket: str, key: str) -> OSError:
    """A boto3 error as the OSError kind pyarrow raises for the same failure, naming the object, so callers and
    `is_transient` treat both clients alike (403 forbidden, 404 missing, connection and timeout errors)."""
    message = f"when {action} key '{key}' in bucket '{bucket}': {error}"
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        kind = {403: PermissionError, 404: FileNotFoundError}.get(status, OSError)
    elif isinstance(error, ReadTimeoutError):
        kind = TimeoutError
    elif isinstance(error, BotoConnectionError):
        kind = ConnectionError
    else:
        kind = OSError
    return kind(message)


class MultipartUpload(io.RawIOBase):
    """A writable stream into one S3 object that becomes visible only through `complete` (an upload that is never
    completed stays invisible to readers), unlike pyarrow's S3 stream, which completes its upload on close even
    after an error. Memory holds at most one part. A file smaller than a part is sent as one PutObject at
    `complete`; a larger one as a multipart upload begun when the first part is full."""

    def __init__(self, client, bucket: str, key: str):
        super().__init__()
        self._client, self.bucket, self.key = client, bucket, key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer += data
        while len(self._buffer) >= UPLOAD_PART_BYTES:
            with memoryview(self._buffer) as view:
                part = bytes(view[:UPLOAD_PART_BYTES])  # one copy, then the buffer can shrink
            self._send_part(part)
            del self._buffer[:UPLOAD_PART_BYTES]
        return len(data)

    def _call(self, action: str, method, **arguments) -> dict:
        try:
            return method(Bucket=self.bucket, Key=self.key, **arguments)
        except (BotoCoreError, ClientError) as error:
            raise storage_error(error, action, self.bucket, self.key) from error

    def _send_part(self, body: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._call("starting the upload of", self._client.create_multipart_upload)["UploadId"]
        number = len(self._parts) + 1
        reply = self._call(
            "uploading part for", self._client.upload_part, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        checksums = {
            name: value for name, value in reply.items() if name.startswith("Checksum") and name != "ChecksumType"
        }
        self._parts.append({"PartNumber": number, "ETag": reply["ETag"], **checksums})

    def complete(self) -> None:
        """Make the object appear, whole."""
        if self._upload_id is None:
            self._call("writing", self._client.put_object, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._send_part(bytes(self._buffer))
            self._call(
                "completing the upload of",
                self._client.complete_multipart_upload,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buffer.clear()

    def abort(self) -> None:
        """Drop the upload and its parts; nothing ever appears at the key."""
        self._buffer.clear()
        if self._upload_id is not None:
            self._call("aborting the upload of", self._client.abort_multipart_upload, UploadId=self._upload_id)


def abort_incomplete_uploads(path: str, initiated_before: dt.datetime) -> int:
    """Abort the incomplete multipart uploads under an S3 prefix (`path`: `bucket/prefix`) begun before
    `initiated_before` (what writers that died before their commit leave; readers never see them, but their parts are
    billed); return how many. Call it only while holding the output's lease (see `pipeline.clear_staging`)."""
    bucket, _, prefix = path.partition("/")
    client = s3_client()
    aborted = 0
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < initiated_before:
                    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
    except (BotoCoreError, ClientError) as error:
        raise storage_error(error, "aborting stale uploads under", bucket, prefix) from error
    return aborted
