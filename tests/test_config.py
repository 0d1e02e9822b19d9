"""Tests for the YAML config loader: resolution of relative URIs and rejection of invalid configs."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from sae_pipeline.config import ColumnSpec, ConfigError, OutputConfig, PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = REPO / "sample_data" / "telemetry.yaml"


def minimal_config(**overrides) -> dict:
    config = {
        "name": "unit",
        "lake": {"uri": "./lake", "partition_keys": {"day": "date"}},
        "columns": [
            {"name": "amount", "type": "float", "role": "numeric", "min": 0},
            {"name": "country", "type": "string", "role": "categorical"},
        ],
        "output": {"uri": "../out"},
    }
    config.update(overrides)
    return config


def write_config(folder: Path, config: dict, name: str = "job.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_sample_config_loads_with_lake_next_to_it():
    config = load_config(SAMPLE_CONFIG)
    assert config.name == "fleet-telemetry"
    assert config.lake.partition_keys == {"day": "date"}
    assert Path(config.lake.uri) == (SAMPLE_CONFIG.parent / "telemetry").resolve()
    assert Path(config.lake.uri).is_dir()
    assert Path(config.output.uri) == (REPO / "outputs" / "demo").resolve()
    assert config.label_column == "label_is_anomaly"
    assert [c.name for c in config.columns_with_role("categorical")] == ["region", "service"]
    assert config.thresholds.target_fpr == 0.01
    assert config.training.partitions[0] == "day=2026-11-01"


def test_relative_uris_resolve_against_config_folder_not_cwd(tmp_path, monkeypatch):
    path = write_config(tmp_path / "configs" / "team", minimal_config())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.lake.uri == str((tmp_path / "configs" / "team" / "lake").resolve())
    assert config.output.uri == str((tmp_path / "configs" / "out").resolve())


def test_absolute_paths_and_remote_uris_are_left_untouched(tmp_path):
    absolute = str(tmp_path / "abs_lake")
    path = write_config(
        tmp_path, minimal_config(lake={"uri": absolute}, output={"uri": "s3://bucket/prefix"})
    )
    config = load_config(path)
    assert config.lake.uri == absolute
    assert config.output.uri == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("section", "patch", "field"),
    [
        ("lake", {"uri": "./lake", "partiton_keys": {"day": "date"}}, "partiton_keys"),
        ("model", {"max_step": 10}, "max_step"),
        ("top", {"treshold": 0.1}, "treshold"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_field(tmp_path, section, patch, field):
    config = minimal_config()
    if section == "top":
        config.update(patch)
    else:
        config[section] = patch
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert field in message
    assert str(path) in message


def test_unknown_key_in_a_column_is_rejected(tmp_path):
    config = minimal_config()
    config["columns"][0]["nulable"] = True
    with pytest.raises(ConfigError, match="nulable"):
        load_config(write_config(tmp_path, config))


def test_min_greater_than_max_is_rejected(tmp_path):
    config = minimal_config()
    config["columns"][0].update({"min": 10, "max": 1})
    with pytest.raises(ConfigError, match=r"'amount': min 10.0 is greater than max 1.0"):
        load_config(write_config(tmp_path, config))


def test_min_equal_to_max_is_allowed():
    spec = ColumnSpec(name="x", type="int", role="numeric", min=3, max=3)
    assert spec.min == spec.max == 3


def test_duplicate_columns_are_rejected(tmp_path):
    config = minimal_config()
    config["columns"].append({"name": "amount", "type": "float", "role": "numeric"})
    with pytest.raises(ConfigError, match=r"more than once: \['amount'\]"):
        load_config(write_config(tmp_path, config))


def test_partition_key_listed_as_column_is_rejected(tmp_path):
    config = minimal_config()
    config["columns"].append({"name": "day", "type": "date", "role": "timestamp"})
    with pytest.raises(ConfigError, match=r"partition keys must not also be listed as columns: \['day'\]"):
        load_config(write_config(tmp_path, config))


def test_config_without_model_columns_is_rejected(tmp_path):
    config = minimal_config(columns=[{"name": "id", "type": "string", "role": "identifier"}])
    with pytest.raises(ConfigError, match="at least one column"):
        load_config(write_config(tmp_path, config))


@pytest.mark.parametrize(
    "column",
    [
        {"name": "c", "type": "string", "role": "categorical", "min": 0},
        {"name": "c", "type": "string", "role": "numeric"},
        {"name": "c", "type": "float", "role": "categorical"},
        {"name": "c", "type": "decimal", "role": "numeric"},
    ],
)
def test_inconsistent_column_specs_are_rejected(tmp_path, column):
    config = minimal_config()
    config["columns"].append(column)
    with pytest.raises(ConfigError, match="columns.2"):
        load_config(write_config(tmp_path, config))


def test_missing_file_raises_config_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "job.yaml"
    with pytest.raises(ConfigError, match="not found") as error:
        load_config(missing)
    assert str(missing) in str(error.value)


def test_invalid_yaml_raises_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("lake: [unclosed\ncolumns: {\n")
    with pytest.raises(ConfigError, match="not valid YAML") as error:
        load_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_non_mapping_yaml_raises_config_error(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


@pytest.mark.parametrize("kind", ["directory", "not_utf8"])
def test_unreadable_config_raises_config_error(tmp_path, kind):
    if kind == "directory":
        path = tmp_path / "job.yaml"
        path.mkdir()
    else:
        path = tmp_path / "job.yaml"
        path.write_bytes(b"name: \xff\xfe\x00bad\n")
    with pytest.raises(ConfigError):
        load_config(path)


def test_invalid_values_are_rejected(tmp_path):
    config = minimal_config(thresholds={"target_fpr": 1.5})
    with pytest.raises(ConfigError, match="thresholds.target_fpr"):
        load_config(write_config(tmp_path, config))


def test_config_is_frozen(tmp_path):
    config = load_config(write_config(tmp_path, minimal_config()))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("uri", ["/data/out", "/data/out/", "s3://bucket/out/"])
def test_output_folders_are_siblings_under_the_output_root(uri):
    output = OutputConfig(uri=uri)
    root = uri.rstrip("/")
    assert output.scored_uri == f"{root}/scored"
    assert output.quarantine_uri == f"{root}/quarantine"
    assert output.ledger_uri == f"{root}/ledger"
    assert output.models_uri == f"{root}/models"
    assert output.drift_uri == f"{root}/drift"
    assert output.runs_uri == f"{root}/runs"
    assert output.staging_uri == f"{root}/_staging"
    children = [
        output.scored_uri, output.quarantine_uri, output.ledger_uri,
        output.models_uri, output.drift_uri, output.runs_uri, output.staging_uri,
    ]
    assert len(set(children)) == len(children)
    # No output folder is nested inside another one (so no table holds foreign files).
    for a in children:
        for b in children:
            assert a == b or not b.startswith(a + "/")


def test_defaults_are_filled_in(tmp_path):
    config = load_config(write_config(tmp_path, {k: v for k, v in minimal_config().items() if k != "name"}))
    assert isinstance(config, PipelineConfig)
    assert config.name == "sae-pipeline"
    assert config.features.min_category_frequency == 0.005
    assert config.training.partitions is None
    assert config.label_column is None


def test_model_section_defaults_are_the_detector_defaults():
    from sae_pipeline import SAEDetector
    from sae_pipeline.config import ModelConfig

    detector_defaults = SAEDetector().get_params()
    for name, value in ModelConfig().model_dump().items():
        assert detector_defaults["random_state" if name == "seed" else name] == value, name


def test_every_model_and_threshold_field_reaches_the_detector(tmp_path):
    """A typed config is only worth having if each field changes what the detector does."""
    from sae_pipeline.updating import detector_from_config

    changed = {
        "sparsity": "l1", "n_latents": 7, "k": 2, "l1_coefficient": 0.5, "kl_target": 0.2, "kl_weight": 2.0,
        "learning_rate": 0.01, "batch_size": 3, "max_steps": 9, "validation_fraction": 0.3, "patience": 2,
        "finetune_steps": 4, "trim_fraction": 0.2, "code_cap_quantile": 0.9, "device": "cpu", "seed": 5,
        "density_weight": 0.5, "n_neighbors": 3, "reference_rows": 500, "exact_neighbours": True,
    }
    from sae_pipeline.config import ModelConfig

    assert set(changed) == set(ModelConfig.model_fields)
    config = load_config(
        write_config(tmp_path, minimal_config(model=changed, thresholds={"target_fpr": 0.05}))
    )
    params = detector_from_config(config).get_params()
    for name, value in changed.items():
        assert params["random_state" if name == "seed" else name] == value, name
    assert params["contamination"] == 0.05


def test_drift_section_loads_with_overrides_and_policy(tmp_path):
    drift = {
        "drift_share": 0.3,
        "numeric": {"method": "ks"},
        "categorical": {"threshold": 0.2},
        "columns": {"amount": {"method": "wasserstein", "threshold": 0.05}, "country": {"method": "psi"}},
        "policy": {"on_dataset_drift": False, "anomaly_rate_factor": 5},
    }
    config = load_config(write_config(tmp_path, minimal_config(drift=drift)))
    assert config.drift.drift_share == 0.3
    assert config.drift.columns["amount"].threshold == 0.05
    assert config.drift.policy.anomaly_rate_factor == 5
    assert load_config(write_config(tmp_path, minimal_config(), "plain.yaml")).drift.drift_share == 0.5


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"columns": {"amuont": {"threshold": 0.2}}}, r"drift.columns names column\(s\) that are not .*\['amuont'\]"),
        ({"columns": {"country": {"method": "ks"}}}, "drift.columns.country: method 'ks' only applies to numeric"),
        ({"categorical": {"method": "wasserstein"}}, "only applies to numeric columns"),
        ({"numeric": {"method": "kolmogorov"}}, "method"),
        ({"drift_share": 1.5}, "drift_share"),
        ({"policy": {"anomaly_rate_factor": 0.5}}, "anomaly_rate_factor"),
        ({"treshold": 0.1}, "treshold"),
    ],
)
def test_invalid_drift_section_is_rejected_at_load(tmp_path, drift, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, minimal_config(drift=drift)))


@pytest.mark.parametrize(
    ("scoring", "message"),
    [
        ({"dask_address": "tcp://scheduler:8786"}, "need scoring.task_runner: dask"),
        ({"dask_workers": 2}, "need scoring.task_runner: dask"),
        ({"task_runner": "dask", "dask_address": "tcp://scheduler:8786", "dask_workers": 2}, "local cluster"),
        ({"task_runner": "dask", "dask_workers": 0}, "dask_workers"),
        ({"task_runner": "ray"}, "task_runner"),
    ],
)
def test_inconsistent_scoring_runner_is_rejected_at_load(tmp_path, scoring, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, minimal_config(scoring=scoring)))


@pytest.mark.parametrize("section", ["lake", "output"])
def test_storage_uris_with_query_options_are_refused_naming_the_environment(tmp_path, section):
    config = minimal_config()
    config[section] = {**config[section], "uri": "s3://bucket/data?endpoint_override=minio:9000&secret_key=x"}
    with pytest.raises(ConfigError, match=r"query options in storage URIs are not supported.*AWS_ENDPOINT_URL") as error:
        load_config(write_config(tmp_path, config))
    assert "secret_key" not in str(error.value)  # config errors never echo values: they may carry secrets
