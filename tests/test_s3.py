"""The whole flow against a real S3 API (moto's server on 127.0.0.1): storage is addressed by URI only, the config
too; partition files reach S3 as uploads that only a commit completes."""

from __future__ import annotations

import datetime as dt

import boto3
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from flows.lake_pipeline import lake_pipeline
from sae_pipeline import parquet_io, storage
from sae_pipeline.config import ColumnSpec, ConfigError, load_config
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.ledger import Ledger
from sae_pipeline.registry import ModelArtifact, ModelRegistry, PipelineModelMetadata, new_model_version
from sae_pipeline.runs import RunSummary
from sae_pipeline.schema import scored_output_schema
from tests.conftest import moto_s3, write_s3_lake_config
from tests.reliability.fault_proxy import FaultProxy


@pytest.fixture(scope="module")
def s3_bucket():
    with moto_s3("lake") as endpoint:
        yield {"bucket": "lake", "endpoint": endpoint}


def _keys(bucket: str, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def _uploads(bucket: str, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


@pytest.mark.usefixtures("prefect_harness")
def test_flow_runs_on_s3_from_a_config_on_s3_and_reruns_do_nothing(s3_bucket, tmp_path):
    bucket = s3_bucket["bucket"]
    _, raw = write_s3_lake_config(tmp_path, bucket, rows_per_day=400, max_steps=100)
    raw.update(lake={**raw["lake"], "uri": "../raw"}, output={"uri": "../out"})  # relative to the config's folder
    config_path = f"s3://{bucket}/conf/pipeline.yaml"
    storage.write_text(config_path, yaml.safe_dump(raw))
    config = load_config(config_path)
    assert (config.lake.uri, config.output.uri) == (f"s3://{bucket}/raw", f"s3://{bucket}/out")

    first = RunSummary.model_validate(lake_pipeline(config_path))
    assert first.model_uri.startswith(f"s3://{bucket}/out/models/")
    assert first.totals["rows_scored"] + first.totals["rows_quarantined"] == 800
    assert ModelRegistry(config.output.models_uri).champion() == first.model_version
    assert set(Ledger(config.output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-02"}

    second = RunSummary.model_validate(lake_pipeline(config_path))
    assert second.training.action == "skip" and second.partitions == [] and len(second.up_to_date) == 2

    options = {
        "aws_endpoint_url": s3_bucket["endpoint"],
        "aws_region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    scored = pl.scan_parquet(
        f"s3://{bucket}/out/scored/", hive_partitioning=True, hive_schema={"day": pl.Date}, storage_options=options
    ).collect()
    assert scored.height == first.totals["rows_scored"]
    scored_output_schema(config).validate(scored.drop("day"))
    assert not storage.list_files(f"s3://{bucket}/out", "_lease.json")
    assert _uploads(bucket, "out/") == [] and _keys(bucket, "out/_staging") == []


def test_config_errors_name_the_uri(s3_bucket):
    base = f"s3://{s3_bucket['bucket']}/conf"
    with pytest.raises(ConfigError, match=f"config file not found: {base}/missing.yaml"):
        load_config(f"{base}/missing.yaml")
    storage.write_text(f"{base}/broken.yaml", "lake: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{base}/broken.yaml: not valid YAML"):
        load_config(f"{base}/broken.yaml")
    storage.write_text(f"{base}/escapes.yaml", yaml.safe_dump({"output": {"uri": "../../other/out"}}))
    with pytest.raises(ConfigError, match=f"{base}/escapes.yaml: '../../other/out' points outside bucket"):
        load_config(f"{base}/escapes.yaml")


# --- partition commits: one object at the final key, whole or never -------------------------------------------


def _incompressible(rows: int, seed: int) -> pa.Table:
    return pa.table({"id": np.arange(rows), "value": np.random.default_rng(seed).normal(size=rows)})


def test_commit_streams_one_object_to_its_final_key_in_parts(s3_bucket, monkeypatch):
    bucket, key = s3_bucket["bucket"], "direct/scored/day=2026-11-01/part-0.parquet"
    table = _incompressible(1_400_000, seed=0)  # ~11 MiB of Parquet: two parts
    with FaultProxy(s3_bucket["endpoint"].removeprefix("http://")) as recorder:  # no faults: it only records
        monkeypatch.setenv("AWS_ENDPOINT_URL", recorder.endpoint)
        writer = parquet_io.PartitionWriter(
            f"s3://{bucket}/direct/scored", "day=2026-11-01", f"s3://{bucket}/direct/_staging", table.schema
        )
        for batch in table.to_batches(max_chunksize=200_000):
            writer.write(pa.Table.from_batches([batch]))
        assert _keys(bucket, "direct/") == [] and _uploads(bucket, "direct/") == [key]  # invisible until committed
        writer.commit()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket["endpoint"])
    assert _keys(bucket, "direct/") == [key] and _uploads(bucket, "direct/") == []
    writes = [path for method, path, _ in recorder.log if method in ("PUT", "POST")]
    assert {path.split("?")[0].replace("%3D", "=") for path in writes} == {f"/{bucket}/{key}"}, writes  # no staging
    assert sum("partNumber=" in path for path in writes) == 2
    filesystem, path = storage.filesystem_for(f"s3://{bucket}/{key}")
    assert pq.read_table(path, filesystem=filesystem).equals(table)


def test_failed_rewrite_keeps_the_old_partition_and_leaves_no_upload(s3_bucket):
    bucket = s3_bucket["bucket"]
    table_uri, staging_uri, key = (
        f"s3://{bucket}/failing/scored",
        f"s3://{bucket}/failing/_staging",
        "failing/scored/day=2026-11-01/part-0.parquet",
    )
    old = _incompressible(10, seed=1)
    first = parquet_io.PartitionWriter(table_uri, "day=2026-11-01", staging_uri, old.schema)
    first.write(old)
    first.commit()
    writer = parquet_io.PartitionWriter(table_uri, "day=2026-11-01", staging_uri, old.schema)
    writer.write(_incompressible(1_400_000, seed=2))
    assert _uploads(bucket, "failing/") == [key]
    writer.abort()  # what scoring does when it fails mid-partition
    assert _uploads(bucket, "failing/") == [] and _keys(bucket, "failing/") == [key]
    assert parquet_io.read_partition(f"{table_uri}/day=2026-11-01").to_arrow().equals(old)


def test_uploads_of_crashed_writers_are_aborted_when_begun_before_the_run(s3_bucket):
    bucket, client = s3_bucket["bucket"], boto3.client("s3")
    client.create_multipart_upload(Bucket=bucket, Key="crash/out/scored/day=2026-11-01/part-0.parquet")
    client.create_multipart_upload(Bucket=bucket, Key="crash/elsewhere/part-0.parquet")
    # moto stamps every upload `Initiated` 2010-11-10T20:48:33Z, so only that side of the cutoff can be shown here.
    assert storage.abort_incomplete_uploads(f"s3://{bucket}/crash/out", dt.datetime(2010, 1, 1, tzinfo=dt.UTC)) == 0
    assert storage.abort_incomplete_uploads(f"s3://{bucket}/crash/out", dt.datetime.now(dt.UTC)) == 1
    assert _uploads(bucket, "crash/") == ["crash/elsewhere/part-0.parquet"]  # another output's upload is not ours


def test_model_registry_on_s3(s3_bucket):
    bucket = s3_bucket["bucket"]
    frame = pl.DataFrame({"a": np.random.default_rng(0).normal(size=200)})
    encoder = TabularEncoder([ColumnSpec(name="a", type="float", role="numeric")]).fit(frame)
    detector = SAEDetector(max_steps=20, device="cpu").fit(encoder.transform(frame))
    registry = ModelRegistry(f"s3://{bucket}/registry/models")
    versions = []
    for minutes in range(3):
        created_at = dt.datetime(2026, 11, 27, tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)
        metadata = PipelineModelMetadata(
            model_version=new_model_version(created_at),
            created_at=created_at,
            config_name="s3",
            trained_on=[],
            training_rows=frame.height,
            target_fpr=0.01,
            features=encoder.to_dict(),
            drift_reference={},
            library_versions={},
        )
        registry.save(ModelArtifact(detector, encoder, metadata, replay=frame.head(20)))
        versions.append(metadata.model_version)

    registry.promote(versions[0], "first")
    registry.promote(versions[1], "second")
    assert [info.version for info in registry.versions()] == versions[::-1]
    assert registry.rollback("bad") == (versions[1], versions[0])
    assert registry.load("champion").replay.equals(frame.head(20))

    assert registry.apply_retention(keep=1) == [versions[1]]
    assert [info.version for info in registry.versions()] == [versions[2], versions[0]]
    s3, _ = storage.filesystem_for(registry.models_uri)
    assert s3.get_file_info(f"{bucket}/registry/models/{versions[1]}").type == pafs.FileType.NotFound
