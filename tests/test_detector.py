"""SAEDetector follows PyOD's detector contract and detects the sample data's anomalies."""

from __future__ import annotations

import ast
import copy
import datetime as dt
import inspect
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.numpy import load_file
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from sae_pipeline import SAEDetector
from sae_pipeline.config import load_config
from sae_pipeline.detector import INPUT_CLIP, WIDE_SEARCH_SHARE
from sae_pipeline.detector_settings import DetectorSettings
from sae_pipeline.features import NotFittedError, TabularEncoder
from sae_pipeline.model import SparseAutoencoder
from sae_pipeline.model_files import MANIFEST_FILE, WEIGHTS_FILE, ModelFileError
from sae_pipeline.sample_data import generate_day
from tests.conftest import SAMPLE_CONFIG, benchmark_module

planted_cluster = benchmark_module("selection").planted_cluster

FAST = {"max_steps": 300}


def correlated_data(n: int = 3000, d: int = 8, n_outliers: int = 60, seed: int = 0):
    """Rows on a low-dimensional subspace plus outliers that leave it (labels: 1 = outlier)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3, d))
    inliers = rng.normal(size=(n, 3)) @ basis + 0.1 * rng.normal(size=(n, d))
    outliers = rng.normal(size=(n_outliers, d)) * 3
    X = np.vstack([inliers, outliers])
    y = np.r_[np.zeros(n), np.ones(n_outliers)]
    return X, y


def reconstruction_residuals(detector: SAEDetector, X: np.ndarray) -> np.ndarray:
    """The SAE's squared reconstruction residuals alone, in scaled space, recomputed from the fitted parts."""
    scaled = torch.as_tensor(np.clip(detector.scaler_.transform(X), -INPUT_CLIP, INPUT_CLIP), dtype=torch.float32)
    with torch.no_grad():
        reconstruction, _ = detector.model_(scaled)
    return (reconstruction - scaled).square().numpy()


@pytest.fixture(scope="module")
def fitted():
    X, y = correlated_data()
    return SAEDetector(**FAST).fit(X), X, y


def test_fit_returns_self_and_sets_fitted_attributes(fitted):
    detector, X, _ = fitted
    assert isinstance(detector, SAEDetector)
    assert detector.decision_scores_.shape == (X.shape[0],)
    assert detector.labels_.shape == (X.shape[0],) and set(np.unique(detector.labels_)) <= {0, 1}
    assert np.isfinite(detector.threshold_)
    assert detector.n_features_in_ == X.shape[1]
    assert {"fraction_variance_unexplained", "l0", "dead_latent_fraction"} <= set(detector.training_report_)
    assert not hasattr(SAEDetector(), "threshold_")


def test_scores_are_higher_for_outliers(fitted):
    detector, X, y = fitted
    assert roc_auc_score(y, detector.decision_function(X)) >= 0.9


def test_decision_function_is_batch_independent_and_predict_uses_threshold(fitted):
    detector, X, _ = fitted
    scores = detector.decision_function(X)
    assert scores.dtype == np.float64 and scores.ndim == 1
    alone = np.array([detector.decision_function(X[i : i + 1])[0] for i in (0, 5, 3010)])
    np.testing.assert_allclose(alone, scores[[0, 5, 3010]], rtol=1e-5)
    np.testing.assert_array_equal(detector.predict(X), (scores > detector.threshold_).astype(int))


def test_missing_cells_are_filled_the_same_whatever_the_batch(fitted):
    """Only rows with a missing cell are reconstructed to fill it, in padded blocks of one shape: a row's score does
    not depend on how many other rows had missing cells, and rows without any keep their scores."""
    detector, X, _ = fitted
    missing = np.zeros(X.shape, dtype=bool)
    missing[::7, 1] = True
    missing[::11, 2] = True
    scores = detector.decision_function(X, missing)
    alone = [detector.decision_function(X[i : i + 1], missing[i : i + 1])[0] for i in (0, 7, 22, 3010)]
    np.testing.assert_allclose(alone, scores[[0, 7, 22, 3010]], rtol=1e-5)
    untouched = ~missing.any(axis=1)
    np.testing.assert_allclose(scores[untouched], detector.decision_function(X)[untouched], rtol=1e-5)


def test_threshold_flags_about_contamination_share_of_clean_rows(fitted):
    detector, X, y = fitted
    flagged_inliers = detector.predict(X[y == 0]).mean()
    assert flagged_inliers < 0.05


def test_pvalues_are_in_unit_interval_and_decrease_with_score(fitted):
    detector, X, _ = fitted
    scores = detector.decision_function(X)
    pvalues = detector.score_pvalues(X)
    assert ((pvalues > 0) & (pvalues <= 1)).all()
    order = np.argsort(scores)
    assert (np.diff(pvalues[order]) <= 1e-12).all()


def test_accepts_polars_frames_and_rejects_bad_input(fitted):
    detector, X, _ = fitted
    frame = pl.DataFrame(X, schema=[f"f{i}" for i in range(X.shape[1])])
    np.testing.assert_allclose(detector.decision_function(frame), detector.decision_function(X))
    with pytest.raises(ValueError, match="non-numeric"):
        detector.decision_function(frame.with_columns(pl.lit("x").alias("f0")))
    with pytest.raises(ValueError, match="NaN"):
        detector.decision_function(np.full((2, X.shape[1]), np.nan))
    with pytest.raises(ValueError, match="features"):
        detector.decision_function(X[:, :3])


def test_extreme_values_score_finite(fitted):
    detector, X, _ = fitted
    extreme = X[:3].copy()
    extreme[0, 0], extreme[1, 1], extreme[2, 2] = 1e300, -np.inf, np.inf
    scores = detector.decision_function(extreme)
    assert np.isfinite(scores).all() and (scores > detector.threshold_).all()


@pytest.mark.parametrize(
    "params",
    [
        {"sparsity": "dense"},
        {"contamination": 0.7},
        {"contamination": 0.5},
        {"max_steps": 0},
        {"k": 0},
        {"trim_fraction": 1.0},
        {"isolation_trim": 0.5},
        {"density_weight": -1.0},
        {"density_weight": float("nan")},
        {"n_neighbors": 0},
        {"reference_rows": 1},
        {"kl_target": 0.0},
        {"learning_rate": float("inf")},
        {"device": "gpu"},
        {"random_state": -1},
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(params):
    with pytest.raises(ValueError, match=f"invalid SAEDetector parameter.*{next(iter(params))}="):
        SAEDetector(**params).fit(np.random.default_rng(0).normal(size=(50, 4)))


def test_constructor_parameters_are_the_declared_settings_with_their_defaults():
    """`__init__` only stores hyperparameters (scikit-learn's contract); their defaults come from DetectorSettings."""
    signature = inspect.signature(SAEDetector.__init__).parameters
    declared = {name: field.default for name, field in DetectorSettings.model_fields.items()}
    assert {name: p.default for name, p in signature.items() if name != "self"} == declared
    assert SAEDetector().get_params() == declared
    assert all(name in SAEDetector.__doc__ for name in declared)


def test_not_fitted_raises():
    with pytest.raises(NotFittedError):
        SAEDetector().decision_function(np.zeros((2, 3)))


def test_clone_and_params_round_trip(fitted):
    detector, _, _ = fitted
    copy = clone(detector)
    assert copy.get_params() == detector.get_params()
    assert not hasattr(copy, "model_")
    assert SAEDetector().set_params(k=3, sparsity="l1").get_params()["k"] == 3


def test_same_seed_gives_same_scores():
    X, _ = correlated_data(n=800)
    first = SAEDetector(max_steps=100, random_state=3).fit(X).decision_scores_
    second = SAEDetector(max_steps=100, random_state=3).fit(X).decision_scores_
    np.testing.assert_array_equal(first, second)


def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    detector, X, _ = fitted
    detector.save(str(tmp_path / "model"))
    tensors = load_file(tmp_path / "model" / "model.safetensors")  # plain arrays, no code execution
    assert "scaler.center" in tensors and "model.W_dec" in tensors
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["threshold"] == detector.threshold_
    loaded = SAEDetector.load(str(tmp_path / "model"))
    np.testing.assert_allclose(loaded.decision_function(X), detector.decision_function(X), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X), detector.predict(X))
    assert loaded.get_params() == detector.get_params()


def test_files_round_trip_in_memory_with_metadata(fitted):
    """`to_files`/`from_files` need no storage: the registry stores the bytes wherever it keeps models."""
    detector, X, _ = fitted
    files = detector.to_files(metadata={"pipeline": {"note": "kept"}})
    assert set(files) == {WEIGHTS_FILE, MANIFEST_FILE}
    assert json.loads(files[MANIFEST_FILE])["pipeline"] == {"note": "kept"}
    loaded = SAEDetector.from_files(files, device="cpu")
    assert loaded.device == "cpu"
    np.testing.assert_allclose(loaded.decision_function(X[:300]), detector.decision_function(X[:300]), rtol=1e-6)


@pytest.mark.parametrize(
    ("file", "damage", "message"),
    [
        (WEIGHTS_FILE, lambda data: data[: len(data) // 2], "corrupt or incompatible weights"),
        (MANIFEST_FILE, lambda data: data[: len(data) // 2], "not valid JSON"),
        (MANIFEST_FILE, lambda data: json.dumps({**json.loads(data), "format": "other"}).encode(), "expected"),
        (WEIGHTS_FILE, None, "missing"),
    ],
)
def test_damaged_files_raise_model_file_error_naming_the_file(fitted, tmp_path, file, damage, message):
    detector, _, _ = fitted
    files = detector.to_files()
    if damage is None:
        del files[file]
    else:
        files[file] = damage(files[file])
    with pytest.raises(ModelFileError, match=message) as error:
        SAEDetector.from_files(files)
    assert error.value.file == file and str(error.value).startswith(f"{file}: ")
    if damage is not None:
        detector.save(tmp_path / "model")
        (tmp_path / "model" / file).write_bytes(files[file])
        with pytest.raises(ModelFileError, match=str(tmp_path / "model" / file)):
            SAEDetector.load(tmp_path / "model")


def test_detector_does_no_storage_io_of_its_own():
    """Persistence is bytes in, bytes out (plus a local folder): storage belongs to the registry."""
    source = Path(inspect.getsourcefile(SAEDetector))
    imported = {
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {name for name in imported if "lake" in name or "registry" in name}


def _mean_active(detector: SAEDetector, X: np.ndarray) -> float:
    return float((detector.transform(X) > 0).sum(axis=1).mean())


def test_topk_codes_have_at_most_k_active_latents():
    X, _ = correlated_data(n=1000)
    detector = SAEDetector(sparsity="topk", k=3, n_latents=32, max_steps=200).fit(X)
    codes = detector.transform(X)
    assert codes.shape == (X.shape[0], 32)
    assert ((codes > 0).sum(axis=1) <= 3).all()


def test_topk_scoring_code_is_the_training_code():
    """Scoring keeps each row's k largest activations with a partial partition, training with `topk`: same code."""
    model = SparseAutoencoder(n_inputs=12, n_latents=24, k=5)
    rows = torch.randn(3000, 12)
    with torch.no_grad():
        scoring = model.encode(rows)
    training = model.encode(rows).detach()  # gradients on: the topk path
    assert training.requires_grad is False and ((scoring > 0).sum(dim=1) <= 5).all()
    torch.testing.assert_close(scoring, training, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("sparsity", "weak", "strong"),
    [
        ("l1", {"l1_coefficient": 1e-4}, {"l1_coefficient": 0.1}),
        ("kl", {"kl_target": 0.3}, {"kl_target": 0.02, "kl_weight": 5.0}),
    ],
)
def test_penalty_modes_produce_sparse_codes_and_strength_matters(sparsity, weak, strong):
    X, _ = correlated_data(n=1500)
    common = {"sparsity": sparsity, "n_latents": 64, "max_steps": 600}
    weak_l0 = _mean_active(SAEDetector(**common, **weak).fit(X), X)
    strong_l0 = _mean_active(SAEDetector(**common, **strong).fit(X), X)
    assert strong_l0 < weak_l0
    assert strong_l0 < 0.25 * 64


def test_finetune_steps_change_the_decoder_only():
    X, _ = correlated_data(n=800)
    base = SAEDetector(sparsity="l1", max_steps=100).fit(X)
    tuned = SAEDetector(sparsity="l1", max_steps=100, finetune_steps=100).fit(X)
    assert np.allclose(base.model_.W_enc.detach(), tuned.model_.W_enc.detach())
    assert not np.allclose(base.model_.W_dec.detach(), tuned.model_.W_dec.detach())


def test_detects_sample_data_anomalies_with_auc_at_least_0_9():
    """The sample lake's injected anomalies (spikes, broken correlations, rare categories), default settings."""
    config = load_config(SAMPLE_CONFIG)
    frame = pl.concat([generate_day(dt.date(2026, 11, 1) + dt.timedelta(days=d), 2000, seed=0) for d in range(5)])
    frame = frame.filter(pl.col("anomaly_kind").fill_null("") != "invalid")
    encoder = TabularEncoder(config.columns, config.features).fit(frame)
    X = encoder.transform(frame)
    detector = SAEDetector().fit(X)
    labels = frame.get_column("label_is_anomaly").to_numpy()
    assert roc_auc_score(labels, detector.decision_scores_) >= 0.9


def test_robust_on_what_real_matrices_hold():
    """Constant, binary, integer and heavy-tailed columns, duplicated rows, 1,500 columns: finite scores, no crash."""
    rng = np.random.default_rng(0)
    n = 400
    columns = [
        np.full(n, 3.0),  # constant
        rng.integers(0, 2, n).astype(float),  # binary
        rng.integers(0, 1000, n).astype(float),  # integer
        rng.standard_cauchy(n) * 1e6,  # heavy tails
        (rng.random(n) < 0.01).astype(float),  # rare one-hot level
    ]
    X = np.column_stack([*columns, rng.normal(size=(n, 1495))])
    X[n // 2 :] = X[: n // 2]  # duplicated rows
    detector = SAEDetector(max_steps=30).fit(X)  # few steps: 1,500 inputs x 1,024 latents is heavy for a unit test
    scores = detector.decision_function(X)
    assert scores.shape == (n,) and np.isfinite(scores).all() and np.isfinite(detector.threshold_)
    assert np.isfinite(detector.score_pvalues(scores=scores)).all()


def test_feature_residuals_row_means_are_the_scores(fitted):
    detector, X, _ = fitted
    terms = detector.feature_residuals(X[:200])
    assert terms.shape == (200, X.shape[1]) and (terms >= 0).all()
    np.testing.assert_allclose(terms.mean(axis=1), detector.decision_function(X[:200]), rtol=1e-6)  # float32 terms
    reconstruction = reconstruction_residuals(detector, X[:200])
    assert reconstruction.shape == terms.shape
    assert (terms >= reconstruction / detector.score_scales_[0] * (1 - 1e-6)).all()


def test_density_weight_zero_scores_by_reconstruction_alone():
    X, _ = correlated_data(n=800)
    detector = SAEDetector(max_steps=100, density_weight=0.0).fit(X)
    expected = reconstruction_residuals(detector, X).mean(axis=1) / detector.score_scales_[0]
    np.testing.assert_allclose(detector.decision_function(X), expected, rtol=1e-6)  # float32 terms
    assert detector.reference_.shape[0] == 0


def test_reference_is_capped_and_excludes_validation_rows():
    X, _ = correlated_data(n=2000)
    detector = SAEDetector(max_steps=50, reference_rows=300).fit(X)
    assert detector.reference_.shape == (300, X.shape[1])


def clustered_data(seed: int = 0):
    """Two tight clusters on a plane; anomalies lie on the plane between them (reconstructable, but in no cluster)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(2, 10))
    centres = np.array([[-3.0, 0.0], [3.0, 0.0]])
    inliers = (centres[rng.integers(0, 2, 3000)] + 0.3 * rng.normal(size=(3000, 2))) @ basis
    between = (np.c_[rng.uniform(-1.5, 1.5, 40), rng.normal(0, 0.3, 40)]) @ basis
    X = np.vstack([inliers, between]) + 0.02 * rng.normal(size=(3040, 10))
    return X, np.r_[np.zeros(3000), np.ones(40)]


def test_density_term_finds_anomalies_reconstruction_cannot():
    """Performance floor: rows between two clusters, on the clusters' own subspace, rank high by default."""
    X, y = clustered_data()
    default = SAEDetector(**FAST).fit(X)
    reconstruction_only = SAEDetector(**FAST, density_weight=0.0).fit(X)
    assert roc_auc_score(y, default.decision_scores_) >= 0.95
    assert roc_auc_score(y, default.decision_scores_) > roc_auc_score(y, reconstruction_only.decision_scores_)


@pytest.mark.parametrize("share", [0.01, 0.04, 0.08])
def test_a_tight_cluster_of_anomalies_in_the_history_still_ranks_above_normal_rows(share):
    """Robustness floor: anomalies that recur as a tight group look dense to the kNN term and get reconstructed once
    the SAE has seen them; leaving out what an isolation forest isolates first keeps them anomalous."""
    history, fresh, labels, _ = planted_cluster(share)
    assert roc_auc_score(labels, SAEDetector(**FAST).fit(history).decision_function(fresh)) >= 0.99


def test_without_isolation_trim_a_planted_cluster_looks_normal():
    """The failure the default guards against (measured: AUC 0.0 at 4% with `isolation_trim=0`)."""
    history, fresh, labels, _ = planted_cluster(0.04)
    assert roc_auc_score(labels, SAEDetector(**FAST, isolation_trim=0.0).fit(history).decision_function(fresh)) < 0.5


def test_isolation_trim_leaves_isolated_rows_out_of_training_and_reference():
    history, _, _, centre = planted_cluster(0.04)
    detector = SAEDetector(**FAST, isolation_trim=0.1).fit(history)
    n_train = history.shape[0] - round(detector.validation_fraction * history.shape[0])
    assert detector.training_report_["isolated_rows_left_out"] == int(0.1 * n_train)
    scaled_centre = torch.as_tensor(detector.scaler_.transform(centre[None, :]), dtype=torch.float32)
    assert torch.cdist(detector.reference_, scaled_centre).min() > 1.0  # no cluster member is a reference row
    assert SAEDetector(**FAST, isolation_trim=0.0).fit(history).training_report_["isolated_rows_left_out"] == 0


def test_version_1_model_folders_still_load_and_score_by_reconstruction(fitted, tmp_path):
    detector, X, _ = fitted
    detector.save(str(tmp_path / "model"))
    manifest_path = tmp_path / "model" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 1
    for key in ("score_scales",):
        manifest.pop(key)
    for key in ("density_weight", "n_neighbors", "reference_rows"):
        manifest["params"].pop(key)
    manifest_path.write_text(json.dumps(manifest))
    loaded = SAEDetector.load(str(tmp_path / "model"))
    assert loaded.density_weight == 0.0
    np.testing.assert_allclose(loaded.decision_function(X), reconstruction_residuals(loaded, X).mean(axis=1), rtol=1e-6)
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="version"):
        SAEDetector.load(str(tmp_path / "model"))


def test_terms_and_codes_equal_feature_residuals_and_transform():
    X = np.random.default_rng(4).normal(size=(300, 6))
    detector = SAEDetector(max_steps=20, device="cpu").fit(X)
    terms, codes = detector.terms_and_codes(X[:50])
    np.testing.assert_allclose(terms, detector.feature_residuals(X[:50]), rtol=1e-6)
    np.testing.assert_allclose(codes, detector.transform(X[:50]), rtol=1e-6)
    empty_terms, empty_codes = detector.terms_and_codes(X[:0])
    assert empty_terms.shape == (0, 6) and empty_codes.shape[0] == 0


def test_mixed_precision_is_plain_fp32_on_cpu():
    import contextlib

    import torch

    from sae_pipeline.training import mixed_precision

    assert isinstance(mixed_precision(torch.device("cpu")), contextlib.nullcontext)
    detector = SAEDetector(max_steps=5, device="cpu").fit(np.random.default_rng(0).normal(size=(100, 4)))
    assert all(parameter.dtype == torch.float32 for parameter in detector.model_.parameters())


@pytest.fixture(scope="module")
def indexed():
    """A detector whose reference is large enough for the cell index, and rows it never saw (with outliers)."""
    X, y = correlated_data(n=9_000, n_outliers=200)
    order = np.random.default_rng(1).permutation(len(X))
    train, test = order[:7_000], order[7_000:]
    return SAEDetector(max_steps=30, device="cpu").fit(X[train]), X[test], y[test]


def searched_wide(detector: SAEDetector) -> SAEDetector:
    """A copy of `detector` that searches every row over the wide probe (as format 3 models do)."""
    wide = copy.deepcopy(detector)
    wide.wide_search_from_ = float("-inf")
    return wide


def test_two_stage_search_keeps_the_wide_searchs_flags_and_top_scores(indexed):
    """Rows below the cut keep their narrow score (never below the wide one, still below the cut); every row at
    or above it, every flag, and every row with a missing cell are the wide search's."""
    detector, X, y = indexed
    cut = detector.wide_search_from_
    assert np.isfinite(cut) and cut <= detector.threshold_
    assert np.mean(detector.validation_scores_ >= cut) == pytest.approx(WIDE_SEARCH_SHARE, abs=0.01)
    two_stage, wide = detector.decision_function(X), searched_wide(detector).decision_function(X)
    above = two_stage >= cut
    np.testing.assert_allclose(two_stage[above], wide[above], rtol=1e-6)
    assert (wide[~above] <= two_stage[~above] * (1 + 1e-6)).all() and (two_stage[~above] < cut).all()
    assert (two_stage[~above] > wide[~above] * (1 + 1e-3)).any()  # the narrow search did miss some neighbours
    np.testing.assert_array_equal(detector.predict(X), searched_wide(detector).predict(X))
    assert roc_auc_score(y, two_stage) == pytest.approx(roc_auc_score(y, wide), abs=0.005)

    missing = np.zeros(X.shape, dtype=bool)
    missing[::7, 2] = True
    np.testing.assert_allclose(
        detector.decision_function(X, missing)[::7],
        searched_wide(detector).decision_function(X, missing)[::7],
        rtol=1e-6,
    )


def test_indexed_reference_is_saved_and_older_folders_search_as_they_were_fitted(indexed, tmp_path):
    """The cell index's centroids and the two-stage cut travel with the model, so scores survive a save and load;
    a version 3 folder (no cut) searches every row wide, and a version 2 folder (no centroids) exactly."""
    detector, X, _ = indexed
    detector.save(str(tmp_path / "model"))
    loaded = SAEDetector.load(str(tmp_path / "model"))
    assert loaded.wide_search_from_ == detector.wide_search_from_
    np.testing.assert_allclose(loaded.decision_function(X[:500]), detector.decision_function(X[:500]), rtol=1e-6)

    manifest_path = tmp_path / "model" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 3
    manifest.pop("wide_search_from")
    manifest_path.write_text(json.dumps(manifest))
    version_3 = SAEDetector.load(str(tmp_path / "model"))
    np.testing.assert_allclose(
        version_3.decision_function(X[:500]), searched_wide(detector).decision_function(X[:500]), rtol=1e-6
    )
    manifest["format_version"] = 2
    manifest["params"].pop("exact_neighbours")
    manifest_path.write_text(json.dumps(manifest))
    assert SAEDetector.load(str(tmp_path / "model")).exact_neighbours
