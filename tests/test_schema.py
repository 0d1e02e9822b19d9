"""Tests for the data contracts: input validation with quarantine, and the scored-output schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pandera.errors import SchemaError, SchemaErrors

from sae_pipeline import scoring
from sae_pipeline.config import PipelineConfig, load_config
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.registry import ModelArtifact, PipelineModelMetadata
from sae_pipeline.sample_data import generate_day
from sae_pipeline.schema import (
    QUARANTINE_REASON_COLUMN,
    QUARANTINE_SOURCE_COLUMN,
    SCORE_COLUMNS,
    InputSchemaError,
    scored_output_check,
    scored_output_schema,
    validate_frame,
)
from sae_pipeline.scoring import score_frame

SAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "sample_data" / "telemetry.yaml"
SOURCE = "lake/day=2026-11-01/part-0.parquet"


@pytest.fixture(scope="module")
def config():
    return load_config(SAMPLE_CONFIG)


@pytest.fixture(scope="module")
def day() -> pl.DataFrame:
    return generate_day(dt.date(2026, 11, 1), rows=400, seed=0)


@pytest.fixture(scope="module")
def clean(day) -> pl.DataFrame:
    return day.filter(pl.col("anomaly_kind").is_null() | (pl.col("anomaly_kind") != "invalid"))


@pytest.fixture(scope="module")
def outcome(day, config):
    return validate_frame(day, config, source=SOURCE)


# --- row-level validation ---------------------------------------------------------------------------------------


def test_all_invalid_rows_are_quarantined_and_nothing_else(day, outcome):
    n_invalid = day.filter(pl.col("anomaly_kind") == "invalid").height
    assert n_invalid == 6
    assert outcome.quarantined.height == n_invalid
    assert outcome.quarantined.get_column("anomaly_kind").to_list() == ["invalid"] * n_invalid
    assert outcome.valid.filter(pl.col("anomaly_kind") == "invalid").height == 0
    assert outcome.valid.height + outcome.quarantined.height == day.height
    assert outcome.counts == {"rows_in": 400, "rows_valid": 394, "rows_quarantined": 6}


def test_quarantine_reasons_name_column_and_rule(outcome):
    reasons = outcome.quarantined.get_column(QUARANTINE_REASON_COLUMN).to_list()
    flat = {reason for row in reasons for reason in row}
    assert "cpu_pct: less_than_or_equal_to(100.0)" in flat
    assert "cpu_pct: not_nullable" in flat
    assert "host_id: not_nullable" in flat
    assert "temperature_c: finite" in flat
    assert "latency_ms: greater_than_or_equal_to(0.0)" in flat
    assert "error_rate: less_than_or_equal_to(1.0)" in flat
    assert all(len(row) >= 1 and row == sorted(row) for row in reasons)
    # Every reason is "<configured column>: <rule>".
    for reason in flat:
        column, _, rule = reason.partition(": ")
        assert column in {"cpu_pct", "host_id", "temperature_c", "latency_ms", "error_rate"} and rule


def test_quarantined_rows_keep_their_data_and_source(day, outcome):
    quarantined = outcome.quarantined
    assert quarantined.columns == [*day.columns, QUARANTINE_REASON_COLUMN, QUARANTINE_SOURCE_COLUMN]
    assert quarantined.get_column(QUARANTINE_SOURCE_COLUMN).unique().to_list() == [SOURCE]
    over = quarantined.filter(pl.col(QUARANTINE_REASON_COLUMN).list.contains("cpu_pct: less_than_or_equal_to(100.0)"))
    assert over.get_column("cpu_pct").to_list() == [250.0]


def test_valid_rows_keep_columns_order_and_canonical_dtypes(day, outcome):
    valid = outcome.valid
    assert valid.columns == day.columns
    assert valid.schema["hour"] == pl.Int64  # Int32 in the file, cast to the configured int type
    assert valid.schema["event_time"] == pl.Datetime("us")
    # Healthy sensor gaps in nullable columns are valid, not quarantined.
    assert valid.get_column("disk_io_mbps").null_count() > 0


def test_clean_frame_has_nothing_quarantined(clean, config):
    outcome = validate_frame(clean, config, source=SOURCE)
    assert outcome.quarantined.height == 0
    assert outcome.valid.height == clean.height
    assert outcome.quarantined.columns[-2:] == [QUARANTINE_REASON_COLUMN, QUARANTINE_SOURCE_COLUMN]


def test_empty_frame_validates_to_empty_outcome(day, config):
    outcome = validate_frame(day.head(0), config, source=SOURCE)
    assert outcome.counts == {"rows_in": 0, "rows_valid": 0, "rows_quarantined": 0}


def test_nan_in_float_column_is_quarantined_as_not_finite(clean, config):
    frame = clean.head(20).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(float("nan")).otherwise(pl.col("mem_pct")).alias("mem_pct")
    )
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.quarantined.height == 1
    assert "mem_pct: finite" in outcome.quarantined.get_column(QUARANTINE_REASON_COLUMN)[0].to_list()


def test_nan_in_nullable_float_column_is_quarantined_not_treated_as_gap(clean, config):
    frame = clean.head(20).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(float("nan")).otherwise(pl.col("disk_io_mbps")).alias("disk_io_mbps")
    )
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.quarantined.get_column(QUARANTINE_REASON_COLUMN).to_list() == [["disk_io_mbps: finite"]]


def test_outputs_keep_only_the_configured_columns_in_config_order(clean, config):
    frame = clean.head(10).with_columns(pl.lit("x").alias("ingest_batch")).select(pl.all().reverse())
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.valid.columns == [column.name for column in config.columns]


def test_zone_aware_and_nanosecond_datetimes_become_naive_utc_microseconds(clean, config):
    frame = clean.head(3).with_columns(
        pl.col("event_time").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris").dt.cast_time_unit("ns")
    )
    valid = validate_frame(frame, config, source=SOURCE).valid
    assert valid.schema["event_time"] == pl.Datetime("us")
    assert valid.get_column("event_time").to_list() == clean.head(3).get_column("event_time").to_list()


# --- structural problems --------------------------------------------------------------------------------------


def test_missing_required_column_raises_naming_source_and_column(day, config):
    with pytest.raises(InputSchemaError) as error:
        validate_frame(day.drop("mem_pct"), config, source=SOURCE)
    message = str(error.value)
    assert SOURCE in message
    assert "mem_pct" in message
    assert "column present" in message


def test_wrong_dtype_raises_naming_column_and_rule(day, config):
    frame = day.with_columns(pl.col("cpu_pct").cast(pl.String))
    with pytest.raises(InputSchemaError) as error:
        validate_frame(frame, config, source=SOURCE)
    message = str(error.value)
    assert SOURCE in message
    assert "'cpu_pct'" in message
    assert "column type" in message


def test_float_given_where_int_expected_is_rejected(day, config):
    with pytest.raises(InputSchemaError, match=r"'hour'.*column type"):
        validate_frame(day.with_columns(pl.col("hour").cast(pl.Float64)), config, source=SOURCE)


def test_int_given_where_float_expected_is_accepted_and_cast(clean, config):
    frame = clean.with_columns(pl.col("cpu_pct").round().cast(pl.Int32))
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.quarantined.height == 0
    assert outcome.valid.schema["cpu_pct"] == pl.Float64
    assert outcome.valid.get_column("cpu_pct").to_list() == frame.get_column("cpu_pct").cast(pl.Float64).to_list()


def test_categorical_given_where_string_expected_is_accepted(clean, config):
    frame = clean.with_columns(pl.col("region").cast(pl.Categorical))
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.valid.schema["region"] == pl.String
    assert outcome.valid.get_column("region").to_list() == clean.get_column("region").to_list()


def test_all_null_column_accepted_in_nullable_column(clean, config):
    frame = clean.with_columns(pl.lit(None).alias("disk_io_mbps"))
    assert frame.schema["disk_io_mbps"] == pl.Null
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.quarantined.height == 0
    assert outcome.valid.schema["disk_io_mbps"] == pl.Float64
    assert outcome.valid.get_column("disk_io_mbps").null_count() == clean.height


def test_all_null_column_in_required_column_quarantines_every_row(clean, config):
    frame = clean.head(15).with_columns(pl.lit(None).alias("cpu_pct"))
    outcome = validate_frame(frame, config, source=SOURCE)
    assert outcome.valid.height == 0
    assert outcome.quarantined.height == 15
    assert outcome.quarantined.get_column(QUARANTINE_REASON_COLUMN).to_list() == [["cpu_pct: not_nullable"]] * 15


def test_uncastable_integer_column_raises_input_schema_error(clean, config):
    frame = clean.head(5).with_columns(pl.lit(2**63 + 5, dtype=pl.UInt64).alias("hour"))
    with pytest.raises(InputSchemaError, match="hour"):
        validate_frame(frame, config, source=SOURCE)


# --- scored-output contract ------------------------------------------------------------------------------------


SCORED_AT = dt.datetime(2026, 11, 27, 6, 15, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def artifact(outcome, config) -> ModelArtifact:
    valid = outcome.valid
    encoder = TabularEncoder(config.columns, config.features).fit(valid)
    detector = SAEDetector(max_steps=4, batch_size=128, device="cpu", random_state=0).fit(encoder.transform(valid))
    metadata = PipelineModelMetadata(
        model_version="20261127T061500Z-unit",
        created_at=SCORED_AT,
        config_name=config.name,
        trained_on=["day=2026-11-01"],
        training_rows=valid.height,
        target_fpr=config.thresholds.target_fpr,
        features=encoder.to_dict(),
        drift_reference={},
        library_versions={},
    )
    return ModelArtifact(detector=detector, encoder=encoder, metadata=metadata)


@pytest.fixture(scope="module")
def scored(artifact, outcome, config) -> pl.DataFrame:
    return pl.from_arrow(
        score_frame(outcome.valid, artifact, top_k=config.scoring.top_features, scored_at=SCORED_AT).table
    )


def test_a_batch_scored_as_two_halves_on_two_threads_is_what_one_pass_gives(artifact, outcome, config, monkeypatch):
    one_pass = score_frame(outcome.valid, artifact, top_k=config.scoring.top_features, scored_at=SCORED_AT)
    monkeypatch.setattr(scoring, "TWO_THREADS_FROM_ROWS", 100)
    halves = score_frame(outcome.valid, artifact, top_k=config.scoring.top_features, scored_at=SCORED_AT)
    assert halves.table.equals(one_pass.table)
    for name in ("scores", "flagged", "codes", "baseline", "groups"):
        assert np.array_equal(getattr(halves, name), getattr(one_pass, name)), name


def test_scorer_output_satisfies_scored_schema(scored, config, outcome):
    validated = scored_output_schema(config).validate(scored)
    assert validated.height == outcome.valid.height
    assert scored.columns[-len(SCORE_COLUMNS) :] == list(SCORE_COLUMNS)
    assert {name: scored.schema[name] for name in SCORE_COLUMNS} == SCORE_COLUMNS
    assert (scored.get_column("anomaly_score") >= 0).all()
    assert scored.get_column("top_features").list.len().to_list() == [3] * scored.height


#: The written contract and the check scoring runs on its own output both reject broken score columns.
EVERY_SCORED_CHECK = pytest.mark.parametrize(
    "contract", [scored_output_schema, scored_output_check], ids=["contract", "check"]
)


@EVERY_SCORED_CHECK
def test_scored_schema_rejects_negative_score(contract, scored, config):
    broken = scored.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("anomaly_score")).alias("anomaly_score")
    )
    with pytest.raises((SchemaError, SchemaErrors), match="anomaly_score"):
        contract(config).validate(broken)


@EVERY_SCORED_CHECK
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_scored_schema_rejects_pvalue_outside_unit_interval(contract, scored, config, value):
    broken = scored.with_columns(pl.lit(value).alias("anomaly_pvalue"))
    with pytest.raises((SchemaError, SchemaErrors), match="anomaly_pvalue"):
        contract(config).validate(broken)


@EVERY_SCORED_CHECK
@pytest.mark.parametrize("column", ["model_version", "top_features", "cpu_pct"])
def test_scored_schema_rejects_missing_contract_column(contract, scored, config, column):
    with pytest.raises((SchemaError, SchemaErrors), match=column):
        contract(config).validate(scored.drop(column))


@EVERY_SCORED_CHECK
def test_scored_schema_rejects_naive_scored_at(contract, scored, config):
    broken = scored.with_columns(pl.col("scored_at").dt.replace_time_zone(None))
    with pytest.raises((SchemaError, SchemaErrors), match="scored_at"):
        contract(config).validate(broken)


def test_scored_pvalues_are_in_unit_interval(scored):
    pvalues = scored.get_column("anomaly_pvalue").to_numpy()
    assert np.all((pvalues > 0) & (pvalues <= 1))


@pytest.fixture(scope="module")
def mixed_rules():
    """A config with every row-level rule, and a conformed frame breaking each of them now and then, NaN, inf and
    nulls included."""
    from sae_pipeline.schema import conform_columns

    config = PipelineConfig.model_validate(
        {
            "lake": {"uri": "/lake"},
            "output": {"uri": "/out"},
            "columns": [
                {"name": "x", "type": "float", "role": "numeric", "min": 0, "max": 10},
                {"name": "y", "type": "float", "role": "numeric", "nullable": True, "min": -1},
                {"name": "n", "type": "int", "role": "numeric", "max": 5},
                {"name": "s", "type": "string", "role": "categorical"},
            ],
        }
    )
    rng = np.random.default_rng(3)
    size = 400
    x = rng.uniform(-2, 12, size)
    x[rng.random(size) < 0.05] = np.nan
    x[rng.random(size) < 0.05] = np.inf
    x[rng.random(size) < 0.05] = -np.inf
    y = rng.uniform(-3, 3, size)
    y[rng.random(size) < 0.05] = np.nan
    frame = pl.DataFrame(
        {
            "x": x,
            "y": pl.Series(y).set(pl.Series(rng.random(size) < 0.1), None),
            "n": pl.Series(rng.integers(0, 8, size)).set(pl.Series(rng.random(size) < 0.05), None),
            "s": pl.Series(rng.choice(["a", "b"], size)).set(pl.Series(rng.random(size) < 0.05), None),
        }
    )
    return config, conform_columns(frame, config, "test")


def test_fast_rule_check_agrees_with_pandera_row_by_row(mixed_rules):
    """`rule_violations` (the fast path) must suspect exactly the rows Pandera rejects, NaN, inf and nulls included."""
    from sae_pipeline.schema import input_schema, rule_violations

    config, conformed = mixed_rules
    suspected = conformed.select(rule_violations(config)).to_series().to_numpy()
    try:
        input_schema(config).validate(conformed, lazy=True)
        rejected = set()
    except SchemaErrors as errors:
        rejected = set(errors.failure_cases.get_column("index").drop_nulls().to_list())
    assert set(np.flatnonzero(suspected)) == rejected and 0 < len(rejected) < conformed.height


def test_a_batch_proven_valid_by_its_column_aggregates_has_no_broken_row(mixed_rules):
    """`surely_valid` may say "check the rows" of a clean batch, never "valid" of a batch with a broken row."""
    from sae_pipeline.schema import rule_violations, surely_valid

    config, conformed = mixed_rules
    suspected = conformed.select(rule_violations(config)).to_series()
    for row in range(conformed.height):  # each row alone: every rule is met by some rows and broken by others
        assert surely_valid(conformed.slice(row, 1), config) != suspected[row]
    assert not surely_valid(conformed, config)
    assert surely_valid(conformed.filter(~suspected), config)
    assert surely_valid(conformed.clear(), config)
