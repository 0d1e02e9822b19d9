"""The whole flow against a real S3 API (moto's server on 127.0.0.1): storage is addressed by URI only."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow.fs as pafs
import pytest

from flows.lake_pipeline import lake_pipeline
from sae_pipeline import lake
from sae_pipeline.config import ColumnSpec, PipelineConfig
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.ledger import Ledger
from sae_pipeline.registry import ModelArtifact, ModelRegistry, PipelineModelMetadata, new_model_version
from sae_pipeline.runs import RunSummary
from sae_pipeline.schema import scored_output_schema
from tests.conftest import moto_s3, write_s3_lake_config


@pytest.fixture(scope="module")
def s3_bucket():
    with moto_s3("lake") as endpoint:
        yield {"bucket": "lake", "endpoint": endpoint}


@pytest.mark.usefixtures("prefect_harness")
def test_flow_runs_on_s3_and_reruns_do_nothing(s3_bucket, tmp_path):
    bucket = s3_bucket["bucket"]
    config_path, raw = write_s3_lake_config(tmp_path, bucket, rows_per_day=400, max_steps=100)
    config = PipelineConfig.model_validate(raw)

    first = RunSummary.model_validate(lake_pipeline(str(config_path)))
    assert first.model_uri.startswith(f"s3://{bucket}/out/models/")
    assert first.totals["rows_scored"] + first.totals["rows_quarantined"] == 800
    assert ModelRegistry(config.output.models_uri).champion() == first.model_version
    assert set(Ledger(config.output.ledger_uri).entries()) == {"day=2026-11-01", "day=2026-11-02"}

    second = RunSummary.model_validate(lake_pipeline(str(config_path)))
    assert second.training["action"] == "skip" and second.partitions == [] and len(second.up_to_date) == 2

    options = {"aws_endpoint_url": s3_bucket["endpoint"], "aws_region": "us-east-1",
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    scored = pl.scan_parquet(
        f"s3://{bucket}/out/scored/", hive_partitioning=True, hive_schema={"day": pl.Date}, storage_options=options
    ).collect()
    assert scored.height == first.totals["rows_scored"]
    scored_output_schema(config).validate(scored.drop("day"))
    assert not lake.list_files(f"s3://{bucket}/out", "_lease.json")


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
    s3, _ = lake.filesystem_for(registry.models_uri)
    assert s3.get_file_info(f"{bucket}/registry/models/{versions[1]}").type == pafs.FileType.NotFound
