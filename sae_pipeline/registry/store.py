"""`ModelRegistry`: immutable model versions under `output.models_uri`, named by mutable aliases.

    models/<version>/model.safetensors, replay.parquet (optional), model.json (written last)
    models/aliases.json   {"format_version": 1, "aliases": {"champion": "<version>"}, "history": [...]}

Promotion and rollback move aliases; they never copy or rewrite a version, so any version can be loaded, compared
and cached forever. Retention deletes old versions, never an aliased one.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import pyarrow.fs as pafs

from sae_pipeline import storage
from sae_pipeline.model_files import MANIFEST_FILE
from sae_pipeline.recent import RecentlyUsed
from sae_pipeline.registry import aliases as alias_document
from sae_pipeline.registry.artifact import (
    ModelArtifact,
    PipelineModelMetadata,
    load_model,
    read_metadata,
    write_artifact,
)
from sae_pipeline.registry.errors import MissingChampionError, RegistryError

logger = logging.getLogger(__name__)

#: An incomplete version folder younger than this may be a write in progress, so retention leaves it alone.
STALE_INCOMPLETE_AFTER = dt.timedelta(hours=1)
#: Version names become folder names: no separators, and no leading `_`/`.` (listings skip those).
_VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Versions loaded for scoring (without replay rows), by folder URI, shared by every registry of the process: a
#: run scores each partition through a registry of its own, and a worker scores many partitions with one version.
#: Versions never change, so a loaded one stays valid; the few most recently used are kept.
_SCORING_CACHE_SIZE = 4
_scoring_artifacts: RecentlyUsed[str, ModelArtifact] = RecentlyUsed(_SCORING_CACHE_SIZE)


@dataclass(frozen=True)
class VersionInfo:
    """What `models list` shows about one complete version (read from its `model.json`, weights untouched)."""

    version: str
    uri: str
    created_at: dt.datetime
    parent_version: str | None
    training_kind: str
    trained_on: list[str]
    training_rows: int
    validation_metrics: dict
    aliases: list[str]


@dataclass(frozen=True)
class _Folder:
    name: str
    complete: bool
    modified: dt.datetime | None  # newest file in the folder (None when storage reports no time)


class ModelRegistry:
    """The model versions and aliases under one `models_uri` (a local path or an `s3://` URI)."""

    CHAMPION = "champion"

    def __init__(self, models_uri: str):
        self.models_uri = models_uri.rstrip("/")
        self._aliases_uri = storage.join_uri(self.models_uri, alias_document.ALIASES_FILE)
        self._loaded: dict[str, ModelArtifact] = {}  # with replay rows; scoring loads are shared (see above)
        self._metadata: dict[str, PipelineModelMetadata] = {}

    def uri(self, version: str) -> str:
        return storage.join_uri(self.models_uri, version)

    # --- versions -------------------------------------------------------------------------------------------

    def _folders(self) -> list[_Folder]:
        """Every version folder, complete or not, from one recursive listing (one LIST call on S3)."""
        fs, root = storage.filesystem_for(self.models_uri)
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
        folders: dict[str, dict] = {}
        for info in infos:
            relative = info.path[len(root) :].strip("/").split("/")
            if relative[0].startswith(("_", ".")) or (len(relative) == 1 and info.type != pafs.FileType.Directory):
                continue
            folder = folders.setdefault(relative[0], {"complete": False, "modified": None})
            if relative[1:] == [MANIFEST_FILE] and info.type == pafs.FileType.File:
                folder["complete"] = True
            if info.mtime is not None:
                mtime = info.mtime if info.mtime.tzinfo else info.mtime.replace(tzinfo=dt.UTC)
                folder["modified"] = max(filter(None, (folder["modified"], mtime)))
        return [_Folder(name, **state) for name, state in folders.items()]

    def _version_names(self) -> set[str]:
        return {folder.name for folder in self._folders() if folder.complete}

    def versions(self) -> list[VersionInfo]:
        """Complete versions, newest first (by creation time, then name)."""
        names = self._version_names()
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        infos = []
        for name in names:
            metadata = self.metadata(name)
            infos.append(
                VersionInfo(
                    version=name,
                    uri=self.uri(name),
                    created_at=metadata.created_at,
                    parent_version=metadata.parent_version,
                    training_kind=metadata.training_kind,
                    trained_on=metadata.trained_on,
                    training_rows=metadata.training_rows,
                    validation_metrics=metadata.validation_metrics,
                    aliases=sorted(by_version.get(name, [])),
                )
            )
        return sorted(infos, key=lambda info: (info.created_at, info.version), reverse=True)

    def metadata(self, version: str) -> PipelineModelMetadata:
        """The pipeline metadata of `version` (an exact name) from its `model.json` alone: no weights, no replay
        sample. Memoised, which is safe because versions never change."""
        if version not in self._metadata:
            self._metadata[version] = read_metadata(self.uri(version))
        return self._metadata[version]

    def save(self, artifact: ModelArtifact) -> str:
        """Write a new version folder and return its URI; aliases do not move (promote it explicitly)."""
        if not _VERSION_PATTERN.fullmatch(artifact.version):
            raise RegistryError(f"invalid model version {artifact.version!r}: use new_model_version()")
        uri = self.uri(artifact.version)
        fs, path = storage.filesystem_for(uri)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise RegistryError(
                f"version {artifact.version} already exists under {self.models_uri}: versions are immutable, "
                "save the model under a new version (new_model_version)"
            )
        write_artifact(artifact, uri)
        return uri

    def resolve(self, ref: str) -> str:
        """The version that `ref` names: an alias, an exact version, or a prefix matching exactly one version."""
        current = self.aliases()
        if ref in current:
            return current[ref]
        if ref == self.CHAMPION:
            raise self._no_champion()
        names = self._version_names()
        if ref in names:
            return ref
        matches = sorted(name for name in names if ref and name.startswith(ref))
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RegistryError(
                f"{ref!r} matches {len(matches)} versions under {self.models_uri} ({', '.join(matches[:5])}"
                f"{', ...' if len(matches) > 5 else ''}): give more characters of the version"
            )
        raise RegistryError(
            f"no version or alias {ref!r} under {self.models_uri}: see `sae-pipeline models list --config ...`"
        )

    def _no_champion(self) -> RegistryError:
        return MissingChampionError(
            f"no champion model under {self.models_uri}: train one first with `sae-pipeline train --config ...`, "
            "or promote a version with `sae-pipeline models promote VERSION --config ...`"
        )

    def load(self, ref: str, with_replay: bool = True) -> ModelArtifact:
        """Load the version that `ref` names; memoised per version, which is safe because versions never change.
        `with_replay=False`: without the replay sample (see `load_model`), for scoring; such loads are shared by
        every registry of the process (`_SCORING_CACHE_SIZE`), and must not be modified."""
        version = self.resolve(ref)
        if with_replay:
            if version not in self._loaded:
                self._loaded[version] = self._load_version(version, with_replay=True)
            return self._loaded[version]
        artifact = _scoring_artifacts.get(self.uri(version))
        if artifact is None:
            artifact = self._load_version(version, with_replay=False)
            _scoring_artifacts.put(self.uri(version), artifact)
        return artifact

    def _load_version(self, version: str, with_replay: bool) -> ModelArtifact:
        artifact = load_model(self.uri(version), with_replay)
        if artifact.version != version:
            raise RegistryError(
                f"{storage.join_uri(self.uri(version), MANIFEST_FILE)} says version {artifact.version}, but its "
                f"folder is {version}: a copied or renamed folder; save it as a new version instead"
            )
        return artifact

    # --- aliases --------------------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        return dict(alias_document.read_document(self._aliases_uri)["aliases"])

    def champion(self) -> str | None:
        return self.aliases().get(self.CHAMPION)

    def _move(self, alias: str, version: str, reason: str) -> None:
        document = alias_document.read_document(self._aliases_uri)
        updated = alias_document.record_move(document, alias, version, reason, dt.datetime.now(dt.UTC))
        storage.write_json(self._aliases_uri, updated)

    def set_alias(self, alias: str, version: str, reason: str) -> None:
        """Point `alias` at the complete version `version` (an exact name: resolve prefixes first)."""
        alias_document.check_alias_name(alias)
        if version not in self._version_names():
            raise RegistryError(
                f"cannot point {alias!r} at {version!r}: no such complete version under {self.models_uri}"
            )
        self._move(alias, version, reason)

    def promote(self, version: str, reason: str) -> str | None:
        """Make `version` the champion; return the previous champion (None if there was none)."""
        previous = self.champion()
        self.set_alias(self.CHAMPION, version, reason)
        return previous

    def rollback(self, reason: str) -> tuple[str, str]:
        """Point the champion back at the version it replaced; repeated rollbacks walk further back.

        Returns (from, to).
        """
        document = alias_document.read_document(self._aliases_uri)
        current = document["aliases"].get(self.CHAMPION)
        if current is None:
            raise self._no_champion()
        earlier = alias_document.earlier_holders(document, self.CHAMPION)
        if not earlier:
            raise RegistryError(
                f"cannot roll back under {self.models_uri}: champion {current} has no earlier champion in "
                f"{self._aliases_uri}; promote a version explicitly with `sae-pipeline models promote`"
            )
        target = earlier[0]
        if target not in self._version_names():
            raise RegistryError(
                f"cannot roll back to {target}: it no longer exists under {self.models_uri} (deleted by retention?); "
                "promote another version explicitly with `sae-pipeline models promote`"
            )
        self._move(self.CHAMPION, target, reason)
        return current, target

    # --- retention ------------------------------------------------------------------------------------------

    def apply_retention(self, keep: int) -> list[str]:
        """Delete all but the `keep` newest complete versions, never an aliased one nor the rollback target; return
        the deleted versions.

        Incomplete folders (crashed writes) older than an hour are deleted too; younger ones may still be written.
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        document = alias_document.read_document(self._aliases_uri)
        # Aliased versions stay, and so does the one a rollback would return to.
        protected = set(document["aliases"].values()) | set(alias_document.earlier_holders(document, self.CHAMPION)[:1])
        doomed = [info.version for info in self.versions()[keep:] if info.version not in protected]
        cutoff = dt.datetime.now(dt.UTC) - STALE_INCOMPLETE_AFTER
        stale = [
            folder.name
            for folder in self._folders()
            if not folder.complete and (folder.modified is None or folder.modified < cutoff)
        ]
        fs, root = storage.filesystem_for(self.models_uri)
        for name in [*doomed, *stale]:
            fs.delete_dir(f"{root}/{name}")
            self._loaded.pop(name, None)
            self._metadata.pop(name, None)
            _scoring_artifacts.pop(self.uri(name))
        if stale:
            logger.info("deleted incomplete model folder(s) under %s: %s", self.models_uri, ", ".join(stale))
        return doomed
