"""Transient and permanent S3 faults, injected by a proxy in front of moto's server on 127.0.0.1.

What happens on a 5xx or a dropped connection (measured here, pyarrow 2x with `FileSystem.from_uri`, which the
pipeline uses): Arrow's S3 client re-sends every retryable request (5xx, throttling, empty reply) by itself,
about every 200 ms for about 6 s (some 30 attempts), so short outages never reach the pipeline. A longer outage
surfaces as an `OSError` ("AWS Error SERVICE_UNAVAILABLE during ... operation"), which `storage.is_transient`
recognises, and the I/O tasks retry (after 2 s, then 10 s). 4xx errors such as AccessDenied are neither re-sent
by Arrow nor retried by the tasks. Partition files go to S3 through boto3 (`parquet_io.PartitionWriter`): it sends each
request up to 5 times (`AWS_MAX_ATTEMPTS`) with exponential backoff, and its errors reach the tasks as the same
OSError kinds, naming the object.
"""

from __future__ import annotations

import re

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from flows.lake_pipeline import PartitionFailures, lake_pipeline
from sae_pipeline import parquet_io, storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.ledger import Ledger
from sae_pipeline.runs import RunSummary
from sae_pipeline.sample_data import generate_sample_lake
from tests.conftest import moto_s3, write_s3_lake_config
from tests.reliability.fault_proxy import Fault, FaultProxy

BUCKET = "lake"


@pytest.fixture
def moto():
    with moto_s3(BUCKET) as endpoint:
        yield endpoint.removeprefix("http://")


def _s3_lake(tmp_path, days: int) -> tuple[str, PipelineConfig]:
    path, raw = write_s3_lake_config(tmp_path, BUCKET, days=days)
    return str(path), PipelineConfig.model_validate(raw)


def _read(uri: str) -> pl.DataFrame:
    frames = [
        pl.from_arrow(pq.read_table(path, filesystem=fs))
        for fs, path in map(storage.filesystem_for, sorted(storage.list_files(uri, parquet_io.PARTITION_FILE)))
    ]
    return pl.concat(frames) if frames else pl.DataFrame()


def _rows(uri: str) -> int:
    return _read(uri).height


def _error(filesystem: pafs.FileSystem) -> OSError:
    with pytest.raises(OSError) as caught, filesystem.open_output_stream(f"{BUCKET}/probe/object") as out:
        out.write(b"payload")
    return caught.value


def test_real_pyarrow_errors_are_classified(moto):
    """The messages `is_transient` sees are Arrow's, captured here with Arrow's own retries off."""
    once = pafs.AwsStandardS3RetryStrategy(max_attempts=1)
    cases = [
        (Fault(503, "PUT"), True, "SERVICE_UNAVAILABLE"),
        (Fault(500, "PUT"), True, "INTERNAL_FAILURE"),
        (Fault(drop=True, method="PUT"), True, "NETWORK_CONNECTION"),
        (Fault(403, "PUT"), False, "ACCESS_DENIED"),
    ]
    for fault, transient, code in cases:
        with FaultProxy(moto, [fault]) as proxy:
            filesystem = pafs.S3FileSystem(endpoint_override=proxy.endpoint, region="us-east-1", retry_strategy=once)
            error = _error(filesystem)
        assert code in str(error) and "probe/object" in str(error), str(error)
        assert storage.is_transient(error) is transient, str(error)


def _commit_error(endpoint: str) -> OSError:
    table = pa.table({"value": [1.0, 2.0]})
    writer = parquet_io.PartitionWriter(
        f"s3://{BUCKET}/probe", "day=2026-11-01", f"s3://{BUCKET}/_staging", table.schema
    )
    writer.write(table)
    with pytest.raises(OSError) as caught:
        writer.commit()
    return caught.value


def test_real_boto3_errors_are_classified(moto, monkeypatch):
    """The same for the partition writer's boto3 client (its re-sends off), and the object is named."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    cases = [
        (Fault(503, "PUT"), True, "ServiceUnavailable"),
        (Fault(500, "PUT"), True, "InternalError"),
        (Fault(drop=True, method="PUT"), True, "Connection was closed"),
        (Fault(403, "PUT"), False, "AccessDenied"),
    ]
    for fault, transient, code in cases:
        with FaultProxy(moto, [fault]) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            error = _commit_error(proxy.endpoint)
        assert code in str(error) and "key 'probe/day=2026-11-01/part-0.parquet'" in str(error), str(error)
        assert storage.is_transient(error) is transient, str(error)


def test_pyarrow_resends_short_outages_itself(moto, monkeypatch):
    """N failures in a row (5xx and dropped connections) cost Arrow's client a few re-sends, not an error."""
    faults = [Fault(503, times=4), Fault(drop=True, method="PUT", times=2), Fault(503, "HEAD", times=3)]
    with FaultProxy(moto, faults) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        filesystem, _ = storage.filesystem_for(f"s3://{BUCKET}/probe")  # what the pipeline uses: Arrow's defaults
        with filesystem.open_output_stream(f"{BUCKET}/probe/object") as out:
            out.write(b"payload")
        assert filesystem.open_input_file(f"{BUCKET}/probe/object").read() == b"payload"
    assert proxy.injected() == 9
    assert [outcome for *_, outcome in proxy.log].count("dropped") == 2


@pytest.mark.usefixtures("prefect_harness")
def test_flow_survives_transient_faults_with_nothing_lost(moto, tmp_path, monkeypatch):
    config_path, config = _s3_lake(tmp_path, days=2)
    seen: list[tuple[str, bool]] = []
    classify = storage.is_transient

    def recording(error):
        seen.append((str(error), classify(error)))
        return seen[-1][1]

    monkeypatch.setattr(storage, "is_transient", recording)
    # Short blips everywhere (the clients re-send them), and an outage of the scored file longer than boto3's 5
    # attempts, so that the score task itself fails once and is retried.
    faults = [
        Fault(503, times=5),
        Fault(drop=True, method="GET", times=2),
        Fault(503, "PUT", rf"^/{BUCKET}/out/scored/day(=|%3D)2026-11-01/", times=7),
    ]
    with FaultProxy(moto, faults) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        summary = RunSummary.model_validate(lake_pipeline(config_path))
    assert proxy.injected() == 5 + 2 + 7
    assert any("ServiceUnavailable" in message and verdict for message, verdict in seen), seen  # the task retried
    assert summary.totals["rows_scored"] + summary.totals["rows_quarantined"] == 600
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{moto}")
    assert _rows(config.output.scored_uri) + _rows(config.output.quarantine_uri) == 600
    assert _rows(config.output.scored_uri) == summary.totals["rows_scored"]
    assert set(Ledger(config.output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-02"}


@pytest.mark.usefixtures("prefect_harness")
def test_permanent_failure_fails_clearly_and_keeps_committed_partitions(moto, tmp_path, monkeypatch):
    config_path, config = _s3_lake(tmp_path, days=2)
    first = RunSummary.model_validate(lake_pipeline(config_path))
    before = _read(config.output.scored_uri)
    # A third day arrives; the scored table has meanwhile become forbidden to write.
    generate_sample_lake(tmp_path / "local3", days=3, rows_per_day=300)
    s3, _ = storage.filesystem_for(f"s3://{BUCKET}/raw")
    pafs.copy_files(
        str(tmp_path / "local3" / "day=2026-11-03"), f"{BUCKET}/raw/day=2026-11-03", destination_filesystem=s3
    )
    with FaultProxy(moto, [Fault(403, "PUT", rf"^/{BUCKET}/out/scored/", times=None)]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(PartitionFailures) as failed:
            lake_pipeline(config_path)
    message = str(failed.value)
    assert "day=2026-11-03" in message and re.search(r"ACCESS_DENIED|Access Denied", message), message
    assert "key 'out/scored/" in message, message  # the object the store refused, not only the partition
    assert proxy.injected() == 1  # forbidden is neither re-sent nor retried (a retry would reach the proxy again)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{moto}")
    assert set(Ledger(config.output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-02"}
    after = _read(config.output.scored_uri)
    assert after.equals(before) and after.height == first.totals["rows_scored"]
