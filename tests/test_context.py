"""Context: rows judged against their group's baseline, their hour and their entity's recent history."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import yaml

from sae_pipeline import hive, pipeline, updating
from sae_pipeline.config import ColumnSpec, ContextConfig, load_config
from sae_pipeline.context import (
    BASELINE_FEW_ROWS,
    BASELINE_NEW_GROUP,
    BASELINE_OWN,
    partition_tail,
    with_recent_means,
)
from sae_pipeline.detector import SAEDetector
from sae_pipeline.features import TabularEncoder
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.scoring import explain
from tests.conftest import write_lake_config

COLUMNS = [
    ColumnSpec(name="at", type="datetime", role="timestamp"),
    ColumnSpec(name="host", type="string", role="identifier"),
    ColumnSpec(name="load", type="float", role="numeric"),
    ColumnSpec(name="cpu", type="float", role="numeric"),
    ColumnSpec(name="disk", type="float", role="numeric", nullable=True),
    ColumnSpec(name="plan", type="string", role="categorical", nullable=True),
]
HOT = {"h0": 80.0, "h1": 20.0, "h2": 50.0, "h3": 35.0}


def fleet(rows_per_host: int = 600, seed: int = 0) -> pl.DataFrame:
    """Hosts with their own load level (h0 always runs hot), a daily rhythm, cpu following load, normal nulls."""
    rng = np.random.default_rng(seed)
    pieces = []
    for host, level in HOT.items():
        at = [dt.datetime(2026, 11, 1) + dt.timedelta(minutes=30 * i) for i in range(rows_per_host)]
        hours = np.array([t.hour for t in at])
        load = level * (1 + 0.3 * np.sin(2 * np.pi * (hours - 9) / 24)) + rng.normal(0, 2, rows_per_host)
        disk = rng.normal(10, 1, rows_per_host)
        plan = rng.choice(["a", "b"], rows_per_host)
        frame = pl.DataFrame(
            {"at": at, "host": host, "load": load, "cpu": 0.8 * load + rng.normal(0, 1, rows_per_host)}
        ).with_columns(
            disk=pl.when(pl.Series(rng.random(rows_per_host) < 0.02)).then(None).otherwise(pl.Series(disk)),
            plan=pl.when(pl.Series(rng.random(rows_per_host) < 0.02)).then(None).otherwise(pl.Series(plan)),
        )
        pieces.append(frame)
    return pl.concat(pieces)


def fitted(frame: pl.DataFrame, **context) -> tuple[TabularEncoder, SAEDetector]:
    config = ContextConfig(**context)
    encoder = TabularEncoder(COLUMNS, context=config, timestamp="at" if context else None).fit(frame)
    encoded = encoder.encode(frame)
    detector = SAEDetector(max_steps=200, random_state=0, contamination=0.01).fit(
        encoded.matrix, missing=encoded.missing
    )
    return encoder, detector


def scores(encoder: TabularEncoder, detector: SAEDetector, frame: pl.DataFrame) -> np.ndarray:
    encoded = encoder.encode(frame)
    return detector.decision_function(encoded.matrix, encoded.missing)


def row(host: str, hour: int, load: float, **values) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "at": [dt.datetime(2026, 11, 20, hour)],
            "host": [host],
            "load": [load],
            "cpu": [values.get("cpu", 0.8 * load)],
            "disk": [values.get("disk", 10.0)],
            "plan": [values.get("plan", "a")],
        },
        schema_overrides={"disk": pl.Float64, "plan": pl.String},
    )


@pytest.fixture(scope="module")
def training() -> pl.DataFrame:
    return fleet()


@pytest.fixture(scope="module")
def with_context(training):
    return fitted(training, entity="host", calendar=["hour_of_day"], min_group_rows=50)


def test_a_host_that_always_runs_hot_is_normal_and_one_that_just_started_to_is_not(training, with_context):
    encoder, detector = with_context
    hot_as_usual = row("h0", 9, 80.0)
    newly_hot = row("h1", 9, 80.0)  # 80 is h0's normal, far from h1's own 20
    assert scores(encoder, detector, hot_as_usual)[0] <= detector.threshold_
    assert scores(encoder, detector, newly_hot)[0] > detector.threshold_
    # Without context both are just fleet values: the change of h1 passes.
    plain_encoder, plain = fitted(training)
    assert scores(plain_encoder, plain, newly_hot)[0] <= plain.threshold_


def test_a_value_normal_at_15h_is_anomalous_at_03h(training, with_context):
    encoder, detector = with_context
    # h2's load peaks at 15:00 (about 65) and is lowest at 03:00 (about 35).
    assert scores(encoder, detector, row("h2", 15, 64.0))[0] <= detector.threshold_
    assert scores(encoder, detector, row("h2", 3, 64.0))[0] > detector.threshold_


def test_groups_with_few_rows_and_new_groups_fall_back_to_the_fleet_and_say_so(training):
    few = training.filter(pl.col("host") == "h3").head(10)
    frame = pl.concat([training.filter(pl.col("host") != "h3"), few])
    encoder, detector = fitted(frame, entity="host", min_group_rows=50)
    assert encoder.baselines_.keys_ == ["h0", "h1", "h2"] and encoder.baselines_.few_rows_keys_ == ["h3"]
    rows = pl.concat([row("h0", 9, 80.0), row("h3", 9, 40.0), row("h9", 9, 40.0)])
    assert encoder.encode(rows).baseline.tolist() == [BASELINE_OWN, BASELINE_FEW_ROWS, BASELINE_NEW_GROUP]
    # A new host with values normal for the fleet is not flagged for being new.
    assert scores(encoder, detector, row("h9", 9, 40.0))[0] <= detector.threshold_


def test_nulls_at_their_usual_rate_are_no_evidence_but_rare_ones_are(training, with_context):
    encoder, detector = with_context
    normal = fleet(rows_per_host=3000, seed=1)
    flagged = scores(encoder, detector, normal) > detector.threshold_
    has_null = (normal.get_column("disk").is_null() | normal.get_column("plan").is_null()).to_numpy()
    assert has_null.sum() > 400
    assert flagged[has_null].mean() <= 2 * max(flagged[~has_null].mean(), 0.01)
    # A column that is never null in training: a null there is evidence.
    never_null = training.with_columns(pl.col("disk").fill_null(10.0))
    rare_encoder = TabularEncoder(COLUMNS, context=ContextConfig(entity="host")).fit(never_null)
    assert (
        rare_encoder.encode(row("h2", 9, 50.0, disk=None)).matrix[0, rare_encoder.feature_names_.index("disk__missing")]
        == 1
    )


def test_explanations_give_the_value_the_typical_value_for_its_baseline_and_the_share(with_context):
    encoder, detector = with_context
    frame = pl.concat([row("h1", 9, 80.0), row("h0", 9, 80.0, plan="z")])
    encoded = encoder.encode(frame)
    terms = detector.feature_residuals(encoded.matrix, encoded.missing)
    names, details = explain(terms, encoder, frame, encoded, k=3)
    first = details.to_pylist()[0]
    load = next(entry for entry in first if entry["column"] == "load")
    assert load["value"] == pytest.approx(80.0)
    assert load["typical"] == pytest.approx(encoder.baselines_.expected(frame, encoded.groups)[0, 0], rel=1e-6)
    assert 10 < load["typical"] < 35  # h1's normal at 09:00, not the fleet's
    assert 0 < sum(entry["share"] for entry in first) <= 1.0 + 1e-6
    assert [entry["column"] for entry in first] == names.to_pylist()[0]
    plan = next((entry for entry in details.to_pylist()[1] if entry["column"] == "plan"), None)
    assert plan is not None and plan["level"] == "z" and plan["typical_level"] in ("a", "b") and plan["value"] is None


def test_recent_medians_continue_across_a_partition_boundary():
    frame = fleet(rows_per_host=40)
    first, second = (
        frame.filter(pl.col("at") < dt.datetime(2026, 11, 1, 10)),
        frame.filter(pl.col("at") >= dt.datetime(2026, 11, 1, 10)),
    )
    numeric = ["load", "cpu", "disk"]
    whole = with_recent_means(frame, None, numeric, "host", "at", 6)
    alone = with_recent_means(second, partition_tail(first, "host", "at", 6), numeric, "host", "at", 6)
    expected = whole.filter(pl.col("at") >= dt.datetime(2026, 11, 1, 10))
    assert alone.equals(expected)
    assert alone.columns == [*second.columns, "load__recent", "cpu__recent", "disk__recent"]


def test_a_partition_scores_the_same_alone_as_in_a_backfill(tmp_path):
    context = {"entity": "host_id", "min_group_rows": 5, "calendar": ["hour_of_day"], "history": {"window": 4}}
    path = write_lake_config(tmp_path, days=3, rows_per_day=300, context=context, max_steps=100)
    config = load_config(path)
    records = hive.partition_records(config.lake)
    version = updating.train_or_update(config, records).model_version
    assert ModelRegistry(config.output.models_uri).load(version).encoder.context.history is not None

    def scored(output: str, partitions) -> pl.DataFrame:
        raw = yaml.safe_load(path.read_text())
        raw["output"]["uri"] = str(tmp_path / output)
        variant = tmp_path / f"{output}.yaml"
        variant.write_text(yaml.safe_dump(raw))
        other = load_config(variant)
        ModelRegistry(other.output.models_uri).save(ModelRegistry(config.output.models_uri).load(version))
        for record in partitions:
            pipeline.score_partition(other, record, version, "run", dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        return pl.read_parquet(tmp_path / output / "scored" / records[-1].name).drop("scored_at")

    alone = scored("alone", records[-1:])
    backfill = scored("backfill", records)
    assert alone.equals(backfill)
    assert alone.get_column("context_baseline").is_not_null().all()


def test_a_context_on_columns_that_are_never_null_or_only_categorical():
    frame = fleet(rows_per_host=100).with_columns(pl.col("disk").fill_null(10.0), pl.col("plan").fill_null("a"))
    required = [column.model_copy(update={"nullable": False}) for column in COLUMNS]
    context = ContextConfig(entity="host", min_group_rows=10, history={"window": 4})
    for columns in (required, [c for c in required if c.role != "numeric"]):
        encoder = TabularEncoder(columns, context=context, timestamp="at").fit(frame)
        encoded = encoder.encode(with_recent_means(frame, None, encoder.numeric_columns, "host", "at", 4))
        assert encoded.matrix.shape == (frame.height, len(encoder.feature_names_))
        assert set(encoded.baseline.tolist()) == {BASELINE_OWN}
