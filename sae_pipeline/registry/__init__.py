"""Model registry: immutable model versions under `output.models_uri`, mutable aliases, retention.

`artifact` is one version folder on storage, `aliases` the `aliases.json` document, `store` the registry over
both, `commands` the `sae-pipeline models ...` command line.
"""

from sae_pipeline.registry.artifact import (
    ModelArtifact,
    PipelineModelMetadata,
    library_versions,
    load_model,
    new_model_version,
)
from sae_pipeline.registry.errors import RegistryError
from sae_pipeline.registry.store import ModelRegistry, VersionInfo

__all__ = [
    "ModelArtifact",
    "ModelRegistry",
    "PipelineModelMetadata",
    "RegistryError",
    "VersionInfo",
    "library_versions",
    "load_model",
    "new_model_version",
]
