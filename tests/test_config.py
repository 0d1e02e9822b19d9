"""Tests for the YAML config loader: resolution of relative URIs and rejection of invalid configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    path = write_config(tmp_path, minimal_config(lake={"uri": absolute}, output={"uri": "s3://bucket/prefix"}))
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
        output.scored_uri,
        output.quarantine_uri,
        output.ledger_uri,
        output.models_uri,
        output.drift_uri,
        output.runs_uri,
        output.staging_uri,
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


#: Config fields that feed a detector parameter of another name.
CONFIG_TO_DETECTOR = {"model.seed": "random_state", "thresholds.target_fpr": "contamination"}


def _detector_facing_fields() -> dict:
    """Every config field that becomes an `SAEDetector` parameter: {"section.field": (FieldInfo, parameter)}."""
    from sae_pipeline.config import ModelConfig, ThresholdConfig

    fields = {}
    for section, model in (("model", ModelConfig), ("thresholds", ThresholdConfig)):
        for name, field in model.model_fields.items():
            key = f"{section}.{name}"
            fields[key] = (field, CONFIG_TO_DETECTOR.get(key, name))
    return fields


def test_config_and_detector_agree_on_every_setting_default_and_bound():
    """The config's model section and target_fpr are the detector's declarations, not a copy that can drift."""
    from sae_pipeline.detector_settings import DetectorSettings

    declared = DetectorSettings.model_fields
    fields = _detector_facing_fields()
    parameters = [parameter for _, parameter in fields.values()]
    assert sorted(parameters) == sorted(set(declared) - {"verbose"})  # verbose is the run's progress flag
    for key, (field, parameter) in fields.items():
        assert field.annotation == declared[parameter].annotation, key
        assert field.default == declared[parameter].default, key
        assert field.metadata == declared[parameter].metadata, key  # bounds, pattern, finiteness
    from sae_pipeline import SAEDetector

    detector_defaults = SAEDetector().get_params()
    for key, (field, parameter) in fields.items():
        assert detector_defaults[parameter] == field.default, key


def _out_of_bounds(field) -> list:
    """Values that break one of `field`'s declared rules (a bound, the device pattern, finiteness, the choices)."""
    from typing import Literal, get_args, get_origin

    from annotated_types import Ge, Gt, Le, Lt

    step = 1 if int in (field.annotation, *get_args(field.annotation)) else 1e-6
    values = []
    for rule in field.metadata:
        if isinstance(rule, Gt):
            values.append(rule.gt)
        elif isinstance(rule, Ge):
            values.append(rule.ge - step)
        elif isinstance(rule, Lt):
            values.append(rule.lt)
        elif isinstance(rule, Le):
            values.append(rule.le + step)
        elif getattr(rule, "pattern", None):
            values.append("gpu")
        elif getattr(rule, "allow_inf_nan", True) is False:
            values.append(float("inf"))
    if get_origin(field.annotation) is Literal:
        values.append("dense")
    return values


REFUSALS = [(key, value) for key, (field, _) in _detector_facing_fields().items() for value in _out_of_bounds(field)]


@pytest.mark.parametrize(("key", "value"), REFUSALS, ids=[f"{key}={value}" for key, value in REFUSALS])
def test_config_refuses_at_load_what_fit_would_refuse(tmp_path, key, value):
    from sae_pipeline import SAEDetector

    section, name = key.split(".")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_config(tmp_path, minimal_config(**{section: {name: value}})))
    parameter = CONFIG_TO_DETECTOR.get(key, name)
    with pytest.raises(ValueError, match=f"invalid SAEDetector parameter.*{parameter}="):
        SAEDetector(**{parameter: value}).fit(np.random.default_rng(0).normal(size=(50, 4)))


def test_every_setting_but_the_boolean_one_has_a_refusal_case():
    unconstrained = {key for key, (field, _) in _detector_facing_fields().items() if not _out_of_bounds(field)}
    assert unconstrained == {"model.exact_neighbours"}  # a bool: pydantic's type check is the only rule


def test_target_fpr_of_half_or_more_is_refused_at_load(tmp_path):
    """target_fpr is the detector's contamination, which must be < 0.5: refused when the config loads, not in fit."""
    for value in (0.6, 0.5):
        with pytest.raises(ConfigError, match=r"thresholds\.target_fpr") as error:
            load_config(write_config(tmp_path, minimal_config(thresholds={"target_fpr": value})))
        assert "less than 0.5" in str(error.value)


def test_every_model_and_threshold_field_reaches_the_detector(tmp_path):
    """A typed config is only worth having if each field changes what the detector does."""
    from sae_pipeline.updating import detector_from_config

    changed = {
        "sparsity": "l1",
        "n_latents": 7,
        "k": 2,
        "l1_coefficient": 0.5,
        "kl_target": 0.2,
        "kl_weight": 2.0,
        "learning_rate": 0.01,
        "batch_size": 3,
        "max_steps": 9,
        "validation_fraction": 0.3,
        "patience": 2,
        "finetune_steps": 4,
        "trim_fraction": 0.2,
        "code_cap_quantile": 0.9,
        "device": "cpu",
        "seed": 5,
        "density_weight": 0.5,
        "n_neighbors": 4,
        "reference_rows": 500,
        "isolation_trim": 0.3,
        "exact_neighbours": True,
    }
    from sae_pipeline.config import ModelConfig

    assert set(changed) == set(ModelConfig.model_fields)
    assert all(ModelConfig.model_fields[name].default != value for name, value in changed.items())
    config = load_config(write_config(tmp_path, minimal_config(model=changed, thresholds={"target_fpr": 0.05})))
    params = detector_from_config(config).get_params()
    for name, value in changed.items():
        assert params["random_state" if name == "seed" else name] == value, name
    assert params["contamination"] == 0.05
    from sae_pipeline.detector_settings import DetectorSettings

    DetectorSettings.of(params)  # what fit validates: a config that loads is one fit accepts


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
    with pytest.raises(
        ConfigError, match=r"query options in storage URIs are not supported.*AWS_ENDPOINT_URL"
    ) as error:
        load_config(write_config(tmp_path, config))
    assert "secret_key" not in str(error.value)  # config errors never echo values: they may carry secrets


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"entity": "countyr"},
            r"context.entity: 'countyr' must be an identifier or categorical column \(did you mean 'country'\?",
        ),
        ({"baseline_by": ["amount"]}, r"context.baseline_by: 'amount' must be an identifier or categorical column"),
        ({"calendar": ["hour_of_day"]}, r"context.calendar and context.history need one timestamp column"),
        ({"history": {"window": 1}}, r"context.history.window"),
        ({"calendar": ["hour"]}, r"context.calendar"),
    ],
)
def test_a_wrong_context_is_one_line_naming_the_setting(tmp_path, context, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, minimal_config(context=context)))


def test_the_context_enters_the_model_hash_only_when_set():
    plain = PipelineConfig.model_validate(minimal_config())
    assert PipelineConfig.model_validate(minimal_config(context={})).model_hash() == plain.model_hash()
    assert (
        PipelineConfig.model_validate(minimal_config(context={"entity": "country"})).model_hash() != plain.model_hash()
    )
