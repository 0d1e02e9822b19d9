"""One model version on storage: `model.safetensors` (arrays), optional `replay.parquet`, `model.json` last.

The detector turns itself into those two files (`SAEDetector.to_files` / `from_files`); this module stores them.
`model.json` carries the detector's hyperparameters, threshold and training metrics, plus under `pipeline` what
scoring and later fine-tunes need: the fitted feature encoder, the drift reference, where the model came from
(partitions, data fingerprints, config hash, parent version) and how it did on validation. Because `model.json`
is written last, a folder without it is a crashed write, never a model. Loading never executes code (no pickle).
"""

from __future__ import annotations

import datetime as dt
import io
import platform
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from sae_pipeline import storage
from sae_pipeline.features import TabularEncoder
from sae_pipeline.model_files import MANIFEST_FILE, WEIGHTS_FILE, ModelFileError, parse_manifest
from sae_pipeline.registry.errors import RegistryError

if TYPE_CHECKING:  # loaded on first model load: reading metadata needs no torch
    from sae_pipeline.detector import SAEDetector

REPLAY_FILE = "replay.parquet"
_TRACKED_PACKAGES = ("sae-pipeline", "torch", "numpy", "polars", "pyarrow", "pandera", "safetensors")
#: Validation metrics recorded under an older name, read under the current one.
RENAMED_METRICS = {"trimmed_mean_error": "trimmed_mean_score"}


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
    parent_version: str | None = None
    training_kind: Literal["train", "update"] = "train"
    data_fingerprints: dict[str, str] = {}
    config_hash: str = ""
    validation_metrics: dict[str, float] = {}

    @field_validator("validation_metrics", mode="before")
    @classmethod
    def _current_metric_names(cls, metrics):
        if isinstance(metrics, dict):
            return {RENAMED_METRICS.get(name, name): value for name, value in metrics.items()}
        return metrics


@dataclass
class ModelArtifact:
    """A fitted model with everything needed to score with it and to fine-tune it later."""

    detector: SAEDetector
    encoder: TabularEncoder
    metadata: PipelineModelMetadata
    replay: pl.DataFrame | None = None

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


def write_artifact(artifact: ModelArtifact, uri: str) -> None:
    """Write the version folder `uri`; `model.json` goes last, so it marks completeness."""
    extra: dict = {"pipeline": artifact.metadata.model_dump(mode="json")}
    files = {}
    if artifact.replay is not None:
        buffer = io.BytesIO()
        artifact.replay.write_parquet(buffer, compression="zstd")
        files[REPLAY_FILE] = buffer.getvalue()
        extra["replay"] = {"file": REPLAY_FILE, "rows": artifact.replay.height}
    files.update(artifact.detector.to_files(metadata=extra))
    for name in sorted(files, key=lambda name: name == MANIFEST_FILE):
        storage.write_bytes(storage.join_uri(uri, name), files[name])


def _read_manifest(uri: str) -> tuple[bytes, dict]:
    manifest_uri = storage.join_uri(uri, MANIFEST_FILE)
    try:
        payload = storage.read_bytes(manifest_uri)
    except storage.LakeReadError as error:
        raise RegistryError(f"{manifest_uri}: missing or unreadable, so this is no complete model ({error})") from error
    try:
        manifest = parse_manifest(payload)
    except ModelFileError as error:
        raise RegistryError(f"{manifest_uri}: {error.problem}") from error
    if "pipeline" not in manifest:
        raise RegistryError(f"{manifest_uri}: a bare SAEDetector folder, not a pipeline model (no 'pipeline' key)")
    return payload, manifest


def read_manifest(uri: str) -> dict:
    """The folder's `model.json`, checked to be a pipeline model of a format this code reads."""
    return _read_manifest(uri)[1]


def read_metadata(uri: str, manifest: dict | None = None) -> PipelineModelMetadata:
    """The pipeline metadata of the model folder `uri`, without loading its weights."""
    manifest = manifest or read_manifest(uri)
    try:
        return PipelineModelMetadata.model_validate(manifest["pipeline"])
    except ValidationError as error:
        raise RegistryError(f"{storage.join_uri(uri, MANIFEST_FILE)}: invalid 'pipeline' metadata: {error}") from error


def load_model(uri: str, with_replay: bool = True) -> ModelArtifact:
    """Load the model folder `uri` (a registry version folder, or any folder written by `write_artifact`).
    `with_replay=False` leaves out the replay sample, which only an update reads (scoring a partition does not)."""
    payload, manifest = _read_manifest(uri)
    metadata = read_metadata(uri, manifest)
    from sae_pipeline.detector import SAEDetector

    files = {MANIFEST_FILE: payload, WEIGHTS_FILE: storage.read_bytes(storage.join_uri(uri, WEIGHTS_FILE))}
    try:
        detector = SAEDetector.from_files(files, manifest=manifest)
    except ModelFileError as error:
        raise RegistryError(f"{storage.join_uri(uri, error.file)}: {error.problem}") from error
    replay = None
    if with_replay and "replay" in manifest:
        replay_uri = storage.join_uri(uri, manifest["replay"]["file"])
        try:
            replay = pl.read_parquet(io.BytesIO(storage.read_bytes(replay_uri)))
        except pl.exceptions.PolarsError as error:
            raise RegistryError(f"{replay_uri}: corrupt replay sample ({error})") from error
    return ModelArtifact(
        detector=detector,
        encoder=TabularEncoder.from_dict(metadata.features),
        metadata=metadata,
        replay=replay,
    )
