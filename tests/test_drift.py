"""Tests for the drift report: PSI/KS behaviour, anomaly-rate test, JSON safety and edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from sae_pipeline.drift import (
    PSI_MAJOR,
    UNSEEN_CATEGORY,
    build_reference,
    compare_to_reference,
    render_markdown,
)

N_ROWS = 20_000
NUMERIC = ["amount", "latency"]
CATEGORICAL = ["country"]


def make_frame(seed: int, n: int = N_ROWS, amount_shift: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "amount": rng.normal(amount_shift, 1.0, n),
        "latency": rng.exponential(2.0, n),
        "country": rng.choice(["FR", "DE", "ES", "IT"], n, p=[0.4, 0.3, 0.2, 0.1]),
    })


@pytest.fixture(scope="module")
def reference() -> dict:
    scores = np.random.default_rng(99).gamma(2.0, 1.0, N_ROWS)
    return build_reference(make_frame(seed=0), NUMERIC, CATEGORICAL, scores=scores)


def test_reference_structure(reference):
    amount = reference["columns"]["amount"]
    assert reference["n_rows"] == N_ROWS
    assert len(amount["quantiles"]) == 101
    assert len(amount["bin_fractions"]) == len(amount["edges"]) + 1 == 10
    assert sum(amount["bin_fractions"]) == pytest.approx(1.0)
    assert sum(reference["columns"]["country"]["frequencies"].values()) == pytest.approx(1.0)
    assert reference["scores"]["quantiles"] is not None


def test_identical_distribution_is_ok(reference):
    report = compare_to_reference(reference, make_frame(seed=1), partition="day=2024-01-02")
    assert report["overall_status"] == "ok"
    assert report["drifted_columns"] == []
    for column in report["columns"].values():
        assert column["psi"] < 0.1
        assert column["status"] == "ok"
    assert report["columns"]["amount"]["ks"] < 0.03


def test_shifted_numeric_column_is_major_with_analytic_ks(reference):
    report = compare_to_reference(reference, make_frame(seed=1, amount_shift=1.0))
    amount = report["columns"]["amount"]
    assert amount["status"] == "major"
    assert amount["psi"] >= PSI_MAJOR
    # Two unit normals one standard deviation apart: D = 2 * Phi(0.5) - 1.
    analytic_ks = math.erf(0.5 / math.sqrt(2))
    assert amount["ks"] == pytest.approx(analytic_ks, abs=0.05)
    assert amount["mean"] == pytest.approx(1.0, abs=0.05)
    assert report["drifted_columns"] == ["amount"]
    assert report["overall_status"] == "major"


def test_unseen_categories_are_detected(reference):
    frame = make_frame(seed=1)
    country = frame["country"].to_numpy().copy()
    country[:2_000] = "XX"
    country[2_000:3_000] = "YY"
    report = compare_to_reference(reference, frame.with_columns(pl.Series("country", country)))
    column = report["columns"]["country"]
    assert column["unseen_share"] == pytest.approx(0.15)
    assert [entry["category"] for entry in column["unseen_categories"]] == ["XX", "YY"]
    assert column["status"] == "major"
    assert UNSEEN_CATEGORY not in [entry["category"] for entry in column["top_categories"]]


def test_null_fraction_change_is_reported(reference):
    frame = make_frame(seed=1)
    latency = frame["latency"].to_list()
    latency[: N_ROWS // 5] = [None] * (N_ROWS // 5)
    report = compare_to_reference(reference, frame.with_columns(pl.Series("latency", latency)))
    column = report["columns"]["latency"]
    assert column["null_fraction"] == pytest.approx(0.2)
    assert column["reference_null_fraction"] == 0.0
    assert column["status"] != "ok"


@pytest.mark.parametrize(("n_flagged", "exceeds"), [(60, False), (250, True)])
def test_anomaly_rate_flag(reference, n_flagged, exceeds):
    n = 5_000
    flagged = np.zeros(n, dtype=bool)
    flagged[:n_flagged] = True
    report = compare_to_reference(reference, make_frame(seed=1, n=n), flagged=flagged, expected_anomaly_rate=0.01)
    anomalies = report["anomalies"]
    assert anomalies["observed_rate"] == pytest.approx(n_flagged / n)
    assert anomalies["expected_rate"] == 0.01
    assert anomalies["anomaly_rate_exceeds_expected"] is exceeds


def test_score_section(reference):
    scores = np.random.default_rng(7).gamma(2.0, 1.0, N_ROWS)
    report = compare_to_reference(reference, make_frame(seed=1), scores=scores)
    section = report["scores"]
    assert section["status"] == "ok"
    assert set(section["quantiles"]) == {"p50", "p90", "p99"}
    assert section["quantiles"]["p50"] == pytest.approx(section["reference_quantiles"]["p50"], rel=0.05)
    shifted = compare_to_reference(reference, make_frame(seed=1), scores=scores + 2.0)["scores"]
    assert shifted["status"] == "major"


def test_report_is_strict_json(reference):
    frame = make_frame(seed=1, amount_shift=1.0)
    scores = np.random.default_rng(7).gamma(2.0, 1.0, N_ROWS)
    report = compare_to_reference(reference, frame, scores=scores, flagged=scores > 6.0,
                                  expected_anomaly_rate=0.01, partition="day=2024-01-02")
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert json.loads(json.dumps(reference, allow_nan=False)) == reference


def test_constant_and_all_null_columns_do_not_crash():
    rng = np.random.default_rng(3)
    training = pl.DataFrame({"constant": np.full(1_000, 5.0), "sometimes": rng.normal(size=1_000),
                             "label": ["a"] * 1_000})
    reference = build_reference(training, ["constant", "sometimes"], ["label"], scores=rng.normal(size=1_000))
    current = pl.DataFrame({
        "constant": np.full(500, 5.0),
        "sometimes": pl.Series([None] * 500, dtype=pl.Float64),
        "label": pl.Series([None] * 500, dtype=pl.String),
    })
    report = compare_to_reference(reference, current, scores=np.full(500, np.nan), partition="edge")
    assert report["columns"]["constant"]["status"] == "ok"
    assert report["columns"]["constant"]["ks"] == 0.0
    sometimes = report["columns"]["sometimes"]
    assert sometimes["null_fraction"] == 1.0 and sometimes["ks"] is None and sometimes["mean"] is None
    assert sometimes["status"] == "major"
    assert report["columns"]["label"]["null_fraction"] == 1.0
    json.dumps(report, allow_nan=False)
    render_markdown(report)


def test_missing_column_names_it(reference):
    with pytest.raises(KeyError, match="latency"):
        compare_to_reference(reference, make_frame(seed=1).drop("latency"))
    with pytest.raises(KeyError, match="nope"):
        build_reference(make_frame(seed=1), ["amount", "nope"], [])


def test_markdown_mentions_partition_and_columns(reference):
    frame = make_frame(seed=1, amount_shift=1.0)
    scores = np.random.default_rng(7).gamma(2.0, 1.0, N_ROWS)
    report = compare_to_reference(reference, frame, scores=scores, flagged=scores > 6.0,
                                  expected_anomaly_rate=0.01, partition="day=2024-01-02")
    markdown = render_markdown(report)
    assert "day=2024-01-02" in markdown
    for name in [*NUMERIC, *CATEGORICAL]:
        assert name in markdown
    assert "major" in markdown
    assert "## Anomaly scores" in markdown
