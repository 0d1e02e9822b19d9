"""Tests for feature encoding (imputation, indicators, one-hot with an "other" level) and robust scaling."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from sae_pipeline.config import ColumnSpec, FeatureConfig
from sae_pipeline.features import OTHER_LEVEL, NotFittedError, RobustScaler, TabularEncoder

COLUMNS = [
    ColumnSpec(name="host", type="string", role="identifier"),
    ColumnSpec(name="amount", type="float", role="numeric"),
    ColumnSpec(name="retries", type="int", role="numeric"),
    ColumnSpec(name="disk", type="float", role="numeric", nullable=True),
    ColumnSpec(name="country", type="string", role="categorical", nullable=True),
    ColumnSpec(name="label", type="bool", role="label"),
]


def training_frame() -> pl.DataFrame:
    # 100 rows: FR x50, DE x30, ES x18, XX x2 (rare at min_category_frequency=0.05).
    countries = ["FR"] * 50 + ["DE"] * 30 + ["ES"] * 18 + ["XX"] * 2
    disk = [float(i) for i in range(100)]
    disk[3] = None
    disk[7] = None
    return pl.DataFrame(
        {
            "host": [f"h{i}" for i in range(100)],
            "amount": [float(i % 10) for i in range(100)],  # median 4.5
            "retries": [i % 3 for i in range(100)],  # median 1
            "disk": disk,
            "country": countries,
            "label": [False] * 100,
        }
    )


@pytest.fixture
def encoder() -> TabularEncoder:
    return TabularEncoder(COLUMNS, FeatureConfig(min_category_frequency=0.05)).fit(training_frame())


def column(encoder: TabularEncoder, matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, encoder.feature_names_.index(name)]


def test_feature_layout_and_sources(encoder):
    assert encoder.feature_names_ == [
        "amount",
        "retries",
        "disk",
        "disk__missing",
        "country=DE",
        "country=ES",
        "country=FR",
        f"country={OTHER_LEVEL}",
    ]
    assert encoder.feature_sources_ == ["amount", "retries", "disk", "disk", "country", "country", "country", "country"]
    assert dict(zip(encoder.feature_names_, encoder.feature_sources_))["disk__missing"] == "disk"
    # Identifiers and labels never become features.
    assert not {"host", "label"} & set(encoder.feature_sources_)


def test_fitted_state(encoder):
    medians = encoder.numeric_medians_
    assert medians["amount"] == pytest.approx(4.5)
    assert medians["retries"] == pytest.approx(1.0)
    assert medians["disk"] == pytest.approx(float(np.median([i for i in range(100) if i not in (3, 7)])))
    assert encoder.indicator_columns_ == ["disk"]  # only nullable numerics get an indicator
    assert encoder.categories_ == {"country": ["DE", "ES", "FR"]}  # XX is rarer than 5 %


def test_nulls_are_imputed_with_medians_and_marked_missing(encoder):
    frame = pl.DataFrame(
        {"amount": [None, 2.0], "retries": [None, 5], "disk": [None, 10.0], "country": ["FR", "DE"]},
        schema={"amount": pl.Float64, "retries": pl.Int64, "disk": pl.Float64, "country": pl.String},
    )
    encoded = encoder.encode(frame)
    X = encoded.matrix
    assert X.dtype == np.float32
    assert X.shape == (2, len(encoder.feature_names_))
    assert column(encoder, X, "amount").tolist() == [4.5, 2.0]
    assert column(encoder, X, "retries").tolist() == [1.0, 5.0]
    assert column(encoder, X, "disk").tolist() == [encoder.numeric_medians_["disk"], 10.0]
    # The detector fills these cells itself and leaves them out of the score.
    missing = dict(zip(encoder.feature_names_, encoded.missing.T))
    assert [name for name, cells in missing.items() if cells[0]] == ["amount", "retries", "disk"]
    assert not encoded.missing[1].any()
    # disk is null in 2% of the training rows: a null there is usual, so its indicator stays off.
    assert column(encoder, X, "disk__missing").tolist() == [0.0, 0.0]
    assert not np.isnan(X).any()


def test_only_a_null_rarer_than_usual_turns_on_the_indicator():
    columns = [ColumnSpec(name="x", type="float", role="numeric", nullable=True)]
    never_null = TabularEncoder(columns).fit(pl.DataFrame({"x": np.arange(5000, dtype=float)}))
    X = never_null.transform(pl.DataFrame({"x": [None, 1.0]}, schema={"x": pl.Float64}))
    assert X[:, never_null.feature_names_.index("x__missing")].tolist() == [1.0, 0.0]


def test_transform_one_hot_with_other_for_unseen_rare_and_null_levels(encoder):
    frame = pl.DataFrame(
        {
            "amount": [1.0] * 5,
            "retries": [0] * 5,
            "disk": [1.0] * 5,
            "country": ["FR", "ES", "XX", "JP", None],  # known, known, rare at fit, unseen, null
        }
    )
    X = encoder.transform(frame)
    one_hot = X[:, encoder.feature_names_.index("country=DE") :]
    assert one_hot.tolist() == [
        [0, 0, 1, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 1],
        [0, 0, 0, 1],
        [0, 0, 0, 1],
    ]
    assert (one_hot.sum(axis=1) == 1).all()  # exactly one level is hot per row


def test_usual_nulls_in_a_nullable_categorical_are_missing_cells_not_a_level():
    columns = [ColumnSpec(name="c", type="string", role="categorical", nullable=True)]
    frame = pl.DataFrame({"c": ["a"] * 6 + [None] * 4})
    encoder = TabularEncoder(columns, FeatureConfig(min_category_frequency=0.1)).fit(frame)
    assert encoder.categories_ == {"c": ["a"]}
    encoded = encoder.encode(pl.DataFrame({"c": [None, "a", "b"]}, schema={"c": pl.String}))
    assert encoded.matrix.tolist() == [[0, 0], [1, 0], [0, 1]]  # the null is left to the detector to fill
    assert encoded.missing.tolist() == [[True, True], [False, False], [False, False]]


def test_max_categories_keeps_most_frequent_levels():
    columns = [ColumnSpec(name="c", type="string", role="categorical")]
    frame = pl.DataFrame({"c": ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2})
    encoder = TabularEncoder(columns, FeatureConfig(min_category_frequency=0.0, max_categories=2)).fit(frame)
    assert encoder.categories_ == {"c": ["a", "b"]}
    assert encoder.transform(pl.DataFrame({"c": ["c"]})).tolist() == [[0, 0, 1]]


def test_int_and_bool_categoricals_are_encoded_by_their_string_value():
    columns = [
        ColumnSpec(name="code", type="int", role="categorical"),
        ColumnSpec(name="flag", type="bool", role="categorical"),
    ]
    frame = pl.DataFrame({"code": [1, 2, 1, 2], "flag": [True, False, True, True]})
    encoder = TabularEncoder(columns, FeatureConfig(min_category_frequency=0.0)).fit(frame)
    assert encoder.feature_names_ == [
        "code=1",
        "code=2",
        f"code={OTHER_LEVEL}",
        "flag=false",
        "flag=true",
        f"flag={OTHER_LEVEL}",
    ]
    assert encoder.transform(pl.DataFrame({"code": [3], "flag": [False]})).tolist() == [[0, 0, 1, 1, 0, 0]]


def test_all_null_numeric_column_imputes_zero():
    columns = [ColumnSpec(name="x", type="float", role="numeric", nullable=True)]
    frame = pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64})
    encoder = TabularEncoder(columns).fit(frame)
    assert encoder.numeric_medians_ == {"x": 0.0}
    # Always null in training: a null is its usual state, no evidence.
    assert encoder.transform(frame).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_round_trip_through_json_gives_identical_transform(encoder):
    state = encoder.to_dict()
    text = json.dumps(state)
    restored = TabularEncoder.from_dict(json.loads(text))
    assert restored.feature_names_ == encoder.feature_names_
    assert restored.feature_sources_ == encoder.feature_sources_
    assert restored.columns == encoder.columns
    assert restored.settings == encoder.settings
    probe = training_frame().vstack(
        pl.DataFrame(
            {"host": ["new"], "amount": [None], "retries": [7], "disk": [None], "country": ["JP"], "label": [True]},
            schema=training_frame().schema,
        )
    )
    np.testing.assert_array_equal(restored.transform(probe), encoder.transform(probe))
    assert restored.to_dict() == state


def test_round_trip_does_not_depend_on_json_key_order():
    columns = [
        ColumnSpec(name="zeta", type="float", role="numeric"),
        ColumnSpec(name="alpha", type="float", role="numeric"),
    ]
    frame = pl.DataFrame({"zeta": [1.0, 2.0, 3.0], "alpha": [10.0, 20.0, 30.0]})
    encoder = TabularEncoder(columns).fit(frame)
    restored = TabularEncoder.from_dict(json.loads(json.dumps(encoder.to_dict(), sort_keys=True)))
    assert restored.feature_names_ == ["zeta", "alpha"]
    np.testing.assert_array_equal(restored.transform(frame), encoder.transform(frame))


def test_transform_before_fit_raises():
    with pytest.raises(NotFittedError):
        TabularEncoder(COLUMNS).transform(training_frame())


def test_fit_on_empty_frame_raises():
    with pytest.raises(ValueError, match="empty"):
        TabularEncoder(COLUMNS).fit(training_frame().head(0))


# --- RobustScaler ------------------------------------------------------------------------------------------------


def test_robust_scaler_uses_median_and_iqr():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 20_001)
    scaler = RobustScaler().fit(x[:, None])
    q75, q25 = np.percentile(x, [75, 25])
    assert scaler.center_[0] == pytest.approx(np.median(x))
    assert scaler.scale_[0] == pytest.approx((q75 - q25) / 1.349)
    assert scaler.scale_[0] == pytest.approx(2.0, rel=0.03)  # IQR/1.349 estimates sigma for normal data
    np.testing.assert_allclose(scaler.transform([[np.median(x)]]), [[0.0]], atol=1e-12)


def test_robust_scaler_fallbacks_for_binary_and_constant_columns():
    binary = np.zeros(100)
    binary[:5] = 1.0  # IQR is 0, std is not
    constant = np.full(100, 7.0)
    varied = np.arange(100, dtype=float)
    X = np.column_stack([binary, constant, varied])
    scaler = RobustScaler().fit(X)
    assert scaler.scale_[0] == pytest.approx(np.std(binary))
    assert scaler.scale_[1] == 1.0
    assert scaler.center_[1] == 7.0
    Z = scaler.transform(X)
    assert np.isfinite(Z).all()
    assert Z[0, 0] == pytest.approx(1.0 / np.std(binary))  # a rare 1 stays visible
    assert (Z[:, 1] == 0).all()


def test_robust_scaler_rejects_nan_with_a_clear_error():
    X = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
    with pytest.raises(ValueError, match="impute"):
        RobustScaler().fit(X)


def test_robust_scaler_round_trip_through_json():
    X = np.random.default_rng(1).lognormal(size=(200, 4))
    X[:, 3] = 0.0
    scaler = RobustScaler().fit(X)
    restored = RobustScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(restored.transform(X), scaler.transform(X))


def test_robust_scaler_transform_before_fit_raises():
    with pytest.raises(NotFittedError):
        RobustScaler().transform(np.zeros((2, 2)))
