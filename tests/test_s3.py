"""The same pipeline steps against a real S3 API (moto's server on 127.0.0.1), proving storage is by URI."""

from __future__ import annotations

import datetime as dt

import boto3
import numpy as np
import polars as pl
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
import yaml
from moto.server import ThreadedMotoServer

from sae_pipeline import lake, pipeline
from sae_pipeline.config import ColumnSpec, PipelineConfig
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.registry import ModelArtifact, ModelRegistry, PipelineModelMetadata, new_model_version
from sae_pipeline.sample_data import generate_sample_lake
from tests.conftest import SAMPLE_CONFIG


@pytest.fixture(scope="module")
def s3_bucket():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        boto3.client("s3").create_bucket(Bucket="lake")
        yield "lake"
    server.stop()


def test_pipeline_steps_run_on_s3(s3_bucket, tmp_path):
    generate_sample_lake(tmp_path / "local", days=2, rows_per_day=400)
    s3, _ = lake.filesystem_for(f"s3://{s3_bucket}/raw")
    pafs.copy_files(str(tmp_path / "local"), f"{s3_bucket}/raw", destination_filesystem=s3)

    raw = yaml.safe_load(SAMPLE_CONFIG.read_text())
    raw.update(
        lake={"uri": f"s3://{s3_bucket}/raw", "partition_keys": {"day": "date"}},
        output={"uri": f"s3://{s3_bucket}/out"},
        training={"partitions": None, "max_rows": 10_000},
        model={"max_steps": 100},
    )
    config = PipelineConfig.model_validate(raw)

    partitions = pipeline.list_partitions(config)
    assert [p["name"] for p in partitions] == ["day=2026-11-01", "day=2026-11-02"]
    validated = [pipeline.validate_partition(config, p) for p in partitions]
    model = pipeline.train_model(config, validated)
    assert model["model_uri"].startswith(f"s3://{s3_bucket}/out/models/")
    scored = [pipeline.score_partition(config, v, model["model_uri"], dt.datetime.now(dt.UTC)) for v in validated]

    assert sum(r["rows_scored"] for r in scored) + sum(v["rows_quarantined"] for v in validated) == 800
    table = ds.dataset(f"{s3_bucket}/out/scored", filesystem=s3, partitioning="hive").to_table()
    assert table.num_rows == sum(r["rows_scored"] for r in scored)
    assert "anomaly_score" in table.column_names
    assert lake.read_json(f"s3://{s3_bucket}/out/drift/day=2026-11-01/drift.json")["partition"] == "day=2026-11-01"
    assert pipeline.existing_model(config)["model_uri"] == model["model_uri"]


def test_model_registry_on_s3(s3_bucket):
    frame = pl.DataFrame({"a": np.random.default_rng(0).normal(size=200)})
    encoder = TabularEncoder([ColumnSpec(name="a", type="float", role="numeric")]).fit(frame)
    detector = SAEDetector(max_steps=20, device="cpu").fit(encoder.transform(frame))
    registry = ModelRegistry(f"s3://{s3_bucket}/registry/models")
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
    s3, _ = lake.filesystem_for(registry.models_uri)
    assert s3.get_file_info(f"{s3_bucket}/registry/models/{versions[1]}").type == pafs.FileType.NotFound
