"""The model artifact: a folder with `model.safetensors` (arrays) and `model.json` (everything else).

`model.json` carries the detector's hyperparameters, threshold and training metrics, plus what the pipeline needs
to score new partitions consistently: the fitted feature encoder, the drift reference, which partitions the
model was trained on and the library versions that produced it. Loading never executes code (no pickle).
The models folder also holds `latest.json`, a pointer to the newest model, for scoring runs that do not train.
"""

from __future__ import annotations

import datetime as dt
import platform
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, ConfigDict

from sae_pipeline import lake
from sae_pipeline.detector import SAEDetector, read_manifest
from sae_pipeline.features import TabularEncoder

LATEST_POINTER = "latest.json"
_TRACKED_PACKAGES = ("sae-pipeline", "torch", "numpy", "polars", "pyarrow", "pandera", "safetensors")


class PipelineModelMetadata(BaseModel):
    """The pipeline's part of `model.json` (the contract that scoring runs and other tools rely on)."""

    model_config = ConfigDict(extra="forbid")

    model_version: str
    created_at: dt.datetime
    config_name: str
    trained_on: list[str]
    training_rows: int
    target_fpr: float
    features: dict
    drift_reference: dict
    library_versions: dict[str, str]


@dataclass
class ModelArtifact:
    detector: SAEDetector
    encoder: TabularEncoder
    metadata: PipelineModelMetadata

    @property
    def version(self) -> str:
        return self.metadata.model_version


def new_model_version(now: dt.datetime) -> str:
    """Sortable and unique: UTC creation time plus a random suffix, e.g. `20261127T061500Z-3f9a1c2e`."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _TRACKED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def save_model(artifact: ModelArtifact, models_uri: str) -> str:
    """Write the artifact to `models_uri/<version>/`, point `latest.json` at it and return its URI."""
    uri = lake.join_uri(models_uri, artifact.version)
    artifact.detector.save(uri, metadata={"pipeline": artifact.metadata.model_dump(mode="json")})
    lake.write_json(
        lake.join_uri(models_uri, LATEST_POINTER), {"model_version": artifact.version, "model_uri": uri}
    )
    return uri


def latest_model_uri(models_uri: str) -> str:
    """The URI of the newest model saved under `models_uri` (raises LakeReadError when there is none)."""
    return lake.read_json(lake.join_uri(models_uri, LATEST_POINTER))["model_uri"]


def load_model(uri: str) -> ModelArtifact:
    manifest = read_manifest(uri)
    if "pipeline" not in manifest:
        raise ValueError(f"{uri}: a bare SAEDetector folder, not a pipeline model (no 'pipeline' metadata)")
    metadata = PipelineModelMetadata.model_validate(manifest["pipeline"])
    return ModelArtifact(
        detector=SAEDetector.load(uri, manifest=manifest),
        encoder=TabularEncoder.from_dict(metadata.features),
        metadata=metadata,
    )
