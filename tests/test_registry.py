"""The model registry on real files: versions, aliases, rollback, retention, damaged folders, and `models` CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import save as save_safetensors

from flows.cli import main
from sae_pipeline.config import ColumnSpec
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.registry import (
    ModelArtifact,
    ModelRegistry,
    PipelineModelMetadata,
    RegistryError,
    new_model_version,
    store,
)

T0 = dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.UTC)
COLUMNS = [ColumnSpec(name="a", type="float", role="numeric"), ColumnSpec(name="b", type="float", role="numeric")]


@pytest.fixture(scope="module")
def fitted() -> tuple[SAEDetector, TabularEncoder, pl.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    encoder = TabularEncoder(COLUMNS).fit(frame)
    return SAEDetector(max_steps=20, device="cpu").fit(encoder.transform(frame)), encoder, frame


@pytest.fixture
def make_artifact(fitted):
    detector, encoder, _ = fitted

    def make(minutes: int = 0, **metadata) -> ModelArtifact:
        created_at = T0 + dt.timedelta(minutes=minutes)
        fields = {
            "model_version": new_model_version(created_at),
            "created_at": created_at,
            "config_name": "unit",
            "trained_on": ["day=2026-11-01"],
            "training_rows": 300,
            "target_fpr": 0.01,
            "features": encoder.to_dict(),
            "drift_reference": {},
            "library_versions": {},
            "validation_metrics": {"trimmed_mean_score": 0.5, "threshold": detector.threshold_},
            **metadata,
        }
        return ModelArtifact(detector=detector, encoder=encoder, metadata=PipelineModelMetadata(**fields))

    return make


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(str(tmp_path / "out" / "models"))


def _save(registry: ModelRegistry, make_artifact, count: int) -> list[str]:
    """Save `count` versions one minute apart; return their names, oldest first."""
    return [Path(registry.save(make_artifact(minutes=i))).name for i in range(count)]


def test_save_list_and_resolve(registry, make_artifact):
    assert registry.versions() == [] and registry.champion() is None
    old, new = _save(registry, make_artifact, 2)
    infos = registry.versions()
    assert [info.version for info in infos] == [new, old]
    assert infos[0].uri == registry.uri(new) and infos[0].training_kind == "train" and infos[0].aliases == []

    registry.promote(old, "first")
    assert registry.resolve("champion") == old
    assert registry.resolve(new) == new
    assert registry.resolve(new[:17]) == new  # timestamps differ by a minute
    with pytest.raises(RegistryError, match="matches 2 versions.*more characters"):
        registry.resolve("2026")
    with pytest.raises(RegistryError, match=f"no version or alias 'nope' under {registry.models_uri}"):
        registry.resolve("nope")
    assert registry.load("champion").version == old
    assert registry.load(old) is registry.load("champion")  # memoised per version


def test_no_champion_error_says_what_to_do(registry, make_artifact):
    _save(registry, make_artifact, 1)
    with pytest.raises(RegistryError, match=f"no champion model under {registry.models_uri}: train one first"):
        registry.load("champion")


def test_versions_are_immutable(registry, make_artifact):
    artifact = make_artifact()
    registry.save(artifact)
    with pytest.raises(RegistryError, match="already exists.*immutable"):
        registry.save(artifact)
    with pytest.raises(RegistryError, match="invalid model version '../escape'"):
        registry.save(make_artifact(model_version="../escape"))


def test_incomplete_folder_is_invisible(registry, make_artifact):
    (version,) = _save(registry, make_artifact, 1)
    crashed = Path(registry.uri(new_model_version(T0 + dt.timedelta(hours=1))))
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"partial")
    assert [info.version for info in registry.versions()] == [version]
    with pytest.raises(RegistryError, match="no version or alias"):
        registry.resolve(crashed.name)


def test_promote_rollback_walks_back_through_history(registry, make_artifact):
    a, b, c = _save(registry, make_artifact, 3)
    assert registry.promote(a, "first") is None
    assert registry.promote(b, "better") == a
    assert registry.promote(c, "newer") == b
    assert registry.rollback("c is bad") == (c, b)
    assert registry.rollback("b is bad too") == (b, a)
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("again")

    document = json.loads((Path(registry.models_uri) / "aliases.json").read_text())
    assert document["format_version"] == 1 and document["aliases"] == {"champion": a}
    assert [(e["version"], e["previous"], e["reason"]) for e in document["history"]][-2:] == [
        (b, c, "c is bad"),
        (a, b, "b is bad too"),
    ]


def test_rollback_without_champion_or_history_fails(registry, make_artifact):
    (a,) = _save(registry, make_artifact, 1)
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback("nothing to roll back")
    registry.promote(a, "only one")
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("nothing before it")


def test_user_aliases_and_bounded_history(registry, make_artifact):
    a, b = _save(registry, make_artifact, 2)
    registry.set_alias("challenger", b, "shadow test")
    registry.promote(a, "first")
    assert registry.aliases() == {"challenger": b, "champion": a}
    assert [info.aliases for info in registry.versions()] == [["challenger"], ["champion"]]
    with pytest.raises(RegistryError, match="invalid alias name"):
        registry.set_alias("Bad Name", a, "")
    with pytest.raises(RegistryError, match="no such complete version"):
        registry.set_alias("x", "20990101T000000Z-deadbeef", "")
    for i in range(205):
        registry.set_alias("flip", a if i % 2 else b, f"move {i}")
    history = json.loads((Path(registry.models_uri) / "aliases.json").read_text())["history"]
    assert len(history) == 200 and history[-1]["reason"] == "move 204"


def test_retention_keeps_newest_and_aliased_and_removes_stale_incomplete(registry, make_artifact):
    versions = _save(registry, make_artifact, 5)  # oldest first
    registry.promote(versions[0], "old but champion")
    registry.set_alias("pinned", versions[1], "keep for audit")
    stale = Path(registry.uri("20261101T000000Z-crashed0"))
    fresh = Path(registry.uri("20261201T000000Z-writing0"))
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (stale / "model.safetensors", stale):
        os.utime(path, (two_hours_ago, two_hours_ago))

    assert registry.apply_retention(keep=2) == [versions[2]]
    remaining = {path.name for path in Path(registry.models_uri).iterdir()}
    assert remaining == {versions[0], versions[1], versions[3], versions[4], fresh.name, "aliases.json"}
    assert registry.apply_retention(keep=2) == []


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("model.safetensors", lambda data: b"\x00" * len(data)),
        ("model.safetensors", lambda data: data[: len(data) // 2]),
        ("model.safetensors", lambda data: save_safetensors({"other": torch.zeros(3)})),
        ("model.json", lambda data: data[: len(data) // 2]),
        ("model.json", lambda data: json.dumps({**json.loads(data), "format_version": 99}).encode()),
    ],
    ids=["corrupt-weights", "truncated-weights", "foreign-weights", "truncated-json", "wrong-format-version"],
)
def test_damaged_version_fails_naming_the_file(registry, make_artifact, file, damage):
    (version,) = _save(registry, make_artifact, 1)
    target = Path(registry.uri(version)) / file
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(ValueError, match=str(target)):
        registry.load(version)


@pytest.mark.parametrize("format_version", [1, 2])
def test_versions_saved_by_previous_formats_still_load(registry, make_artifact, format_version):
    """Upgrading must not strand a registry: format 2 folders (no kNN index) load and search exactly; format 1
    folders (no density term, no score scales) score by reconstruction alone."""
    (version,) = _save(registry, make_artifact, 1)
    manifest_path = Path(registry.uri(version)) / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = format_version
    manifest["params"].pop("exact_neighbours")
    if format_version == 1:
        manifest.pop("score_scales")
        for key in ("density_weight", "n_neighbors", "reference_rows"):
            manifest["params"].pop(key)
    manifest_path.write_text(json.dumps(manifest))
    detector = registry.load(version).detector
    assert detector.exact_neighbours and detector.density_weight == (0.0 if format_version == 1 else 3.0)
    assert np.isfinite(detector.decision_function(np.zeros((3, 2)))).all()


def test_metadata_is_read_without_weights_or_replay(registry, make_artifact, fitted):
    """Listing versions and deciding what to train read `model.json` alone, never the weights or replay rows."""
    (version,) = _save(registry, make_artifact, 1)
    (Path(registry.uri(version)) / "model.safetensors").unlink()
    assert registry.metadata(version).model_version == version
    assert [info.version for info in registry.versions()] == [version]
    with pytest.raises(RegistryError):
        registry.metadata("20990101T000000Z-deadbeef")


def test_decide_training_reads_no_weights(registry, make_artifact, config_path):
    from sae_pipeline.config import load_config
    from sae_pipeline.updating import decide_training

    config = load_config(config_path)
    artifact = make_artifact(config_hash=config.model_hash(), data_fingerprints={"day=2026-11-01": "f1"})
    registry.save(artifact)
    registry.promote(artifact.version, "first")
    (Path(registry.uri(artifact.version)) / "model.safetensors").unlink()
    from sae_pipeline.records import PartitionRecord

    def partition(fingerprint: str) -> list[PartitionRecord]:
        return [PartitionRecord(name="day=2026-11-01", uri="unused", values={}, fingerprint=fingerprint)]

    assert decide_training(config, registry, partition("f1")).action == "skip"
    assert decide_training(config, registry, partition("f2")).action == "update"


def test_registries_with_the_former_metric_name_still_list_and_show(registry, make_artifact, config_path, capsys):
    """Versions written before the promotion metric was renamed (trimmed_mean_error -> trimmed_mean_score)."""
    (version,) = _save(registry, make_artifact, 1)
    manifest_path = Path(registry.uri(version)) / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["pipeline"]["validation_metrics"] = {"trimmed_mean_error": 0.25, "flagged_rate": 0.01}
    manifest_path.write_text(json.dumps(manifest))
    assert registry.versions()[0].validation_metrics == {"trimmed_mean_score": 0.25, "flagged_rate": 0.01}
    assert main(["models", "list", "--config", str(config_path)]) == 0
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert "val. mean score" in header and row.split()[-3] == "0.25"  # then reviewed precision, aliases
    assert main(["models", "show", version, "--config", str(config_path)]) == 0
    assert "trimmed_mean_score: 0.25" in capsys.readouterr().out


@pytest.mark.parametrize("payload", [b"{not json", b'{"format_version": 2, "aliases": {}, "history": []}'])
def test_damaged_aliases_file_fails_naming_it(registry, make_artifact, payload):
    _save(registry, make_artifact, 1)
    aliases = Path(registry.models_uri) / "aliases.json"
    aliases.write_bytes(payload)
    with pytest.raises(RegistryError, match=str(aliases)):
        registry.champion()


def test_replay_round_trip(registry, make_artifact, fitted):
    replay = fitted[2].head(50)
    artifact = replace(make_artifact(), replay=replay)
    uri = registry.save(artifact)
    assert sorted(path.name for path in Path(uri).iterdir()) == ["model.json", "model.safetensors", "replay.parquet"]
    loaded = registry.load(artifact.version)
    assert loaded.replay.equals(replay)
    np.testing.assert_allclose(
        loaded.detector.decision_function(loaded.encoder.transform(replay)),
        artifact.detector.decision_function(artifact.encoder.transform(replay)),
        rtol=1e-6,
    )
    without = make_artifact(minutes=1)
    registry.save(without)
    assert registry.load(without.version).replay is None


def test_scoring_loads_a_model_without_its_replay_rows(registry, make_artifact, fitted):
    """Scoring never reads the replay sample; asking for it later, from the same registry, still gets it."""
    replay = fitted[2].head(50)
    artifact = replace(make_artifact(), replay=replay)
    registry.save(artifact)
    bare = registry.load(artifact.version, with_replay=False)
    assert bare.replay is None
    np.testing.assert_array_equal(
        bare.detector.decision_function(bare.encoder.transform(replay)),
        artifact.detector.decision_function(artifact.encoder.transform(replay)),
    )
    assert registry.load(artifact.version).replay.equals(replay)


def test_scoring_loads_are_shared_by_the_registries_of_a_process(registry, make_artifact):
    """A run scores each partition through a registry of its own: a version is read once per process, the most
    recently used few are kept, and retention forgets the versions it deletes."""
    first, *others = _save(registry, make_artifact, store._SCORING_CACHE_SIZE + 1)
    loaded = registry.load(first, with_replay=False)
    assert ModelRegistry(registry.models_uri).load(first, with_replay=False) is loaded
    assert registry.load(first) is not loaded  # an update's load (replay rows) is its own: it may be changed
    for version in others:  # pushes `first` out
        registry.load(version, with_replay=False)
    assert registry.load(first, with_replay=False) is not loaded
    registry.set_alias("keep", first, "test")
    assert others[-1] in registry.apply_retention(keep=0)
    assert registry.uri(others[-1]) not in store._scoring_artifacts
    assert registry.uri(first) in store._scoring_artifacts


# --- the `sae-pipeline models` command line -----------------------------------------------------------------------


@pytest.fixture
def config_path(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "name": "unit",
        "lake": {"uri": "lake"},
        "columns": [column.model_dump(exclude_defaults=True) for column in COLUMNS],
        "output": {"uri": "out"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_list_show_promote_rollback(registry, make_artifact, config_path, capsys):
    a, b = _save(registry, make_artifact, 2)
    assert main(["models", "list", "--config", str(config_path)]) == 0
    assert "no models" not in capsys.readouterr().out

    assert main(["models", "promote", a, "--config", str(config_path), "--reason", "first"]) == 0
    assert capsys.readouterr().out.strip() == f"champion: (none) -> {a}"
    assert main(["models", "promote", b[:17], "--config", str(config_path)]) == 0
    assert capsys.readouterr().out.strip() == f"champion: {a} -> {b}"

    assert main(["models", "list", "--config", str(config_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["version", "created", "(UTC)"]
    assert lines[2].startswith(b) and lines[2].endswith("champion")
    assert lines[3].startswith(a) and "champion" not in lines[3]

    assert main(["models", "show", "champion", "--config", str(config_path)]) == 0
    shown = capsys.readouterr().out
    assert f"version: {b}" in shown and "aliases: champion" in shown and "trimmed_mean_score: 0.5" in shown
    assert main(["models", "show", b, "--json", "--config", str(config_path)]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["uri"] == registry.uri(b) and details["aliases"] == ["champion"] and details["replay"] is None

    assert main(["models", "rollback", "--config", str(config_path), "--reason", "b is bad"]) == 0
    assert capsys.readouterr().out.strip() == f"champion: {b} -> {a} (rolled back)"
    assert registry.champion() == a

    assert main(["models", "promote", b, "--alias", "challenger", "--config", str(config_path)]) == 0
    assert registry.aliases() == {"champion": a, "challenger": b}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "show", "nope"], "no version or alias 'nope'"),
        (["models", "promote", "nope"], "no version or alias 'nope'"),
        (["models", "rollback"], "no champion model"),
    ],
)
def test_cli_errors_are_one_line_and_a_hint_with_status_2(make_artifact, registry, config_path, capsys, argv, message):
    _save(registry, make_artifact, 1)
    assert main([*argv, "--config", str(config_path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0]
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: "))


def test_cli_bad_config_exits_2(tmp_path, capsys):
    assert main(["models", "list", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
