"""`SAEDetector`: the in-memory anomaly detector, following PyOD's detector contract.

    detector = SAEDetector().fit(X)            # X: numeric numpy array or polars DataFrame, no labels
    detector.decision_function(X_new)          # 1-D float64, higher = more anomalous
    detector.predict(X_new)                    # 0/1, 1 = anomaly (score > threshold_)

The score of a row is the mean over features of two per-feature terms, both in robustly scaled feature space:

    score(x) = mean_j [ r_j(x) / s_rec  +  density_weight * g_j(x) / s_gap ]

- r_j = (x_j - x_hat_j)^2, the SAE's squared reconstruction residual;
- g_j = mean over x's `n_neighbors` nearest rows n in a reference set of training rows of (x_j - n_j)^2, so that
  mean_j g_j is the mean squared distance to those neighbours / n_features (a kNN density term; on a CPU the
  neighbours of a large reference are searched in two stages, see `SAEDetector._score_terms`);
- s_rec, s_gap: the spread (IQR) of the two terms' row means on the held-out validation rows, so that both are on
  one scale whatever the data.
`feature_residuals` returns the per-feature terms in brackets, so its row mean is exactly the score and the
features it ranks first are the ones that make the row unusual. `density_weight=0` gives the pure reconstruction
score (scaled by s_rec). The score depends only on that row and the fitted state.

Cells whose value is unknown (`missing`, a boolean mask beside X: nulls the caller imputed) are filled with the
model's own reconstruction before scoring, and their terms are set to the mean of the row's known terms: a missing
value is no evidence either way, and it does not distort the other columns' residuals.

`threshold_` is set split-conformally on a held-out validation split (`sae_pipeline.thresholds`: the k-th largest
validation score, k = floor(contamination x (n + 1))), so a row is flagged exactly when its empirical p-value against
that split is at most k / (n + 1) <= contamination; `score_pvalues` gives each row's p-value against the same split
(with a fitted tail past its top scores). There is deliberately no `score_samples`: scikit-learn gives that name the
opposite sign convention.

`to_files` / `from_files` turn a fitted detector into named files (safetensors arrays + a JSON manifest, never a
pickle) and back; `save` / `load` keep them in a local folder. Storing them elsewhere is the caller's business
(`sae_pipeline.registry` does it for model versions).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest

from sae_pipeline.detector_settings import DetectorSettings, Sparsity, numpydoc_parameters
from sae_pipeline.features import NotFittedError, RobustScaler
from sae_pipeline.model import SparseAutoencoder
from sae_pipeline.model_files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    parse_manifest,
)
from sae_pipeline.neighbours import fit_cells, neighbour_gaps, searches_cells
from sae_pipeline.thresholds import calibration_rank, tail_pvalues, threshold_at_fpr
from sae_pipeline.training import row_errors, train_sae

#: Scaled inputs are clipped to this magnitude so that absurd values give a large, finite score, never inf/NaN.
INPUT_CLIP = 1e4
_MIN_ROWS = 10
_SCORE_CHUNK = 65_536
#: Reconstruction passes that fill missing cells (the second sees the first's fill).
_IMPUTE_PASSES = 2
_IMPUTE_BLOCK = 4_096  # rows per product when filling missing cells (padded: one shape, one kernel)
#: Rows whose narrow-search score reaches the validation score at this top share are searched again wide. Twice
#: the default contamination; 0.05 cost 4-5% more CPU time in scoring for mean AUC-ROC within 0.0002 in all three
#: detection protocols (BENCHMARKS.md, issue 22's sixth round).
WIDE_SEARCH_SHARE = 0.02
_DEFAULTS = DetectorSettings()
#: The isolation forest of `isolation_trim`: rows per tree and trees. Few rows per tree keep a cluster of anomalies
#: from hiding in numbers: a tree sees only a few of its members, which a few splits cut off together.
_ISOLATION_SAMPLES = 32
_ISOLATION_TREES = 100


def _spread(values: np.ndarray) -> float:
    """IQR of `values`, else their standard deviation, else 1: a scale that is never 0."""
    q25, q75 = np.quantile(values, [0.25, 0.75])
    for candidate in (q75 - q25, values.std()):
        if np.isfinite(candidate) and candidate > 1e-12:
            return float(candidate)
    return 1.0


def missing_mask(missing, shape: tuple[int, ...]) -> np.ndarray | None:
    """`missing` as a boolean array of `shape`, or None when no cell is missing."""
    if missing is None:
        return None
    mask = np.asarray(missing, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"missing has shape {mask.shape}, X has shape {tuple(shape)}")
    return mask if mask.any() else None


def fill_missing_terms(terms: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Set each missing cell's term to the mean of its row's known terms (in place; rows with no known cell keep
    theirs), so the row's score is the mean over what is known."""
    if mask is None:
        return terms
    rows = np.flatnonzero(mask.any(axis=1) & ~mask.all(axis=1))
    known = ~mask[rows]
    means = (terms[rows] * known).sum(axis=1) / known.sum(axis=1)
    terms[rows] = np.where(known, terms[rows], means[:, None])
    return terms


def row_scores(terms: np.ndarray) -> np.ndarray:
    """Anomaly scores from per-feature score terms: their row means, accumulated in float64 (every caller uses
    this, so scores, threshold and p-values agree to the last bit)."""
    return terms.mean(axis=1, dtype=np.float64)


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_matrix(X) -> np.ndarray:
    """Accept a numpy array, a polars DataFrame or anything array-like; return a 2-D float array (float32 input
    stays float32: the model computes in float32, and a float64 copy of every batch would cost time for nothing)."""
    if isinstance(X, pl.DataFrame):
        non_numeric = [name for name, dtype in X.schema.items() if not (dtype.is_numeric() or dtype == pl.Boolean)]
        if non_numeric:
            raise ValueError(f"non-numeric columns {non_numeric}: encode them first (see TabularEncoder)")
        X = X.to_numpy()
    X = np.asarray(X)
    if X.dtype != np.float32:
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {X.shape}")
    if np.isnan(X).any():
        raise ValueError("X contains NaN: impute missing values first (TabularEncoder does)")
    return X


class SAEDetector(BaseEstimator):
    """Sparse-autoencoder anomaly detector.

        Parameters
        ----------
        Declared once, with their defaults, bounds and meaning, by `sae_pipeline.detector_settings.DetectorSettings`
        (`fit` validates them against it; the pipeline config's `model` section is built from it):

    {parameters}

        Attributes
        ----------
        decision_scores_ : ndarray of shape (n_samples,)
            Scores of the training rows.
        threshold_ : float
        labels_ : ndarray of shape (n_samples,)
            0/1 labels of the training rows.
        validation_scores_ : ndarray
            Sorted held-out scores, the reference for p-values.
        n_features_in_ : int
        settings_ : DetectorSettings
            The validated parameters the detector was fitted with (and scores with).
        training_report_ : dict
            Steps, validation MSE, fraction of variance unexplained, L0, dead-latent fraction, speed.
    """

    def __init__(
        self,
        sparsity: Sparsity = _DEFAULTS.sparsity,
        n_latents: int | None = _DEFAULTS.n_latents,
        k: int | None = _DEFAULTS.k,
        l1_coefficient: float = _DEFAULTS.l1_coefficient,
        kl_target: float = _DEFAULTS.kl_target,
        kl_weight: float = _DEFAULTS.kl_weight,
        learning_rate: float = _DEFAULTS.learning_rate,
        batch_size: int = _DEFAULTS.batch_size,
        max_steps: int = _DEFAULTS.max_steps,
        patience: int = _DEFAULTS.patience,
        validation_fraction: float = _DEFAULTS.validation_fraction,
        trim_fraction: float = _DEFAULTS.trim_fraction,
        finetune_steps: int = _DEFAULTS.finetune_steps,
        code_cap_quantile: float | None = _DEFAULTS.code_cap_quantile,
        density_weight: float = _DEFAULTS.density_weight,
        n_neighbors: int = _DEFAULTS.n_neighbors,
        reference_rows: int = _DEFAULTS.reference_rows,
        isolation_trim: float = _DEFAULTS.isolation_trim,
        exact_neighbours: bool = _DEFAULTS.exact_neighbours,
        contamination: float = _DEFAULTS.contamination,
        device: str = _DEFAULTS.device,
        random_state: int = _DEFAULTS.random_state,
        verbose: bool = _DEFAULTS.verbose,
    ):
        self.sparsity = sparsity
        self.n_latents = n_latents
        self.k = k
        self.l1_coefficient = l1_coefficient
        self.kl_target = kl_target
        self.kl_weight = kl_weight
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.trim_fraction = trim_fraction
        self.finetune_steps = finetune_steps
        self.code_cap_quantile = code_cap_quantile
        self.density_weight = density_weight
        self.n_neighbors = n_neighbors
        self.reference_rows = reference_rows
        self.isolation_trim = isolation_trim
        self.exact_neighbours = exact_neighbours
        self.contamination = contamination
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _architecture(self, n_features: int) -> tuple[int, int]:
        n_latents = self.settings_.n_latents or int(np.clip(2 * n_features, 16, 1024))
        k = self.settings_.k or int(np.clip(n_features // 4, 1, 32))
        return n_latents, min(k, n_latents)

    def fit(self, X, y=None, missing=None) -> SAEDetector:
        """Fit on unlabelled rows (`y` is ignored, as in PyOD; `missing`: see module doc). Returns self.

        Raises ValueError naming every invalid parameter (the bounds of `DetectorSettings`).
        """
        self.settings_ = DetectorSettings.of(self.get_params())
        X = as_matrix(X)
        if X.shape[0] < _MIN_ROWS:
            raise ValueError(f"need at least {_MIN_ROWS} rows to fit, got {X.shape[0]}")
        train_rows, val_rows, rng = self._split(X.shape[0])
        self.n_features_in_ = X.shape[1]
        self.scaler_ = RobustScaler().fit(X[train_rows])
        self.device_ = resolve_device(self.settings_.device)
        n_latents, k = self._architecture(X.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings_.random_state)
            self.model_ = SparseAutoencoder(X.shape[1], n_latents, self.settings_.sparsity, k).to(self.device_)
        scaled = self._to_tensor(X)
        mask = missing_mask(missing, X.shape)
        self._train_and_calibrate(scaled, train_rows, val_rows, rng, self.settings_.max_steps, mask)
        return self

    def fine_tuned(self, X, max_steps: int, missing=None) -> SAEDetector:
        """A new detector that starts from this one's weights and scaling and trains `max_steps` more steps on X.

        For models that follow drifting data: the feature scaling is kept (so the weights keep their meaning);
        the code caps, kNN reference, score scales, threshold and p-value reference are recomputed from X (its
        validation split; `add_calibration_rows` adds rows held out before).
        """
        self._check_fitted()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        X = as_matrix(X)
        if X.shape[0] < _MIN_ROWS:
            raise ValueError(f"need at least {_MIN_ROWS} rows to fine-tune, got {X.shape[0]}")
        tuned = copy.deepcopy(self)
        tuned.settings_ = DetectorSettings.of(tuned.get_params())
        train_rows, val_rows, rng = tuned._split(X.shape[0])
        mask = missing_mask(missing, X.shape)
        tuned._train_and_calibrate(tuned._to_tensor(X), train_rows, val_rows, rng, max_steps, mask)
        return tuned

    def _split(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Seeded (training rows, validation rows, the generator that drew them, for later seeded choices)."""
        rng = np.random.default_rng(self.settings_.random_state)
        order = rng.permutation(n_rows)
        n_val = max(1, int(round(self.settings_.validation_fraction * n_rows)))
        return order[n_val:], order[:n_val], rng

    def _train_and_calibrate(
        self,
        scaled: torch.Tensor,
        train_rows: np.ndarray,
        val_rows: np.ndarray,
        rng: np.random.Generator,
        max_steps: int,
        mask: np.ndarray | None,
    ) -> None:
        """Train `model_` in place, cap its codes, keep the kNN reference, and set the score scales, the scores,
        the threshold and the p-value reference (missing cells filled and left out of the scores)."""
        settings = self.settings_
        schedule = settings.model_copy(update={"max_steps": max_steps})
        self.model_.code_cap.fill_(float("inf"))  # a fine-tune starts uncapped; the cap is re-measured below
        train_rows, n_isolated = self._without_isolated(scaled, train_rows)
        train, validation = scaled[train_rows], scaled[val_rows]
        report = train_sae(self.model_, train, validation, schedule, settings.random_state, progress=settings.verbose)
        self.training_report_ = {**report.to_dict(), "isolated_rows_left_out": n_isolated}
        if settings.code_cap_quantile is not None:
            self.model_.cap_codes_at_quantile(train, settings.code_cap_quantile)

        scaled = self._impute(scaled, mask)
        residuals = self._reconstruction_residuals(scaled)
        reference_rows = self._fit_reference(scaled, train_rows, rng)
        in_reference = torch.full((scaled.shape[0],), -1, dtype=torch.long)
        in_reference[reference_rows] = torch.arange(reference_rows.size)
        val_residuals = residuals[val_rows]
        val_gaps = self._gaps(scaled[val_rows])  # validation rows are never reference rows
        self.score_scales_ = (
            _spread(val_residuals.mean(dim=1).cpu().numpy()),
            _spread(val_gaps.mean(dim=1).cpu().numpy()) if val_gaps is not None else 1.0,
        )
        val_mask = mask[val_rows] if mask is not None else None
        wide_val_scores = row_scores(fill_missing_terms(self._combine(val_residuals, val_gaps), val_mask))
        self.wide_search_from_ = self._wide_search_cut(wide_val_scores, scaled)
        self.decision_scores_ = row_scores(self._score_terms(scaled, residuals, mask, in_reference))
        self._calibrate(self.decision_scores_[val_rows])

    def _wide_search_cut(self, wide_val_scores: np.ndarray, scaled: torch.Tensor) -> float:
        """The score from which a row's neighbours are searched wide (`_score_terms`): the validation score at the
        top `WIDE_SEARCH_SHARE`, and always below the threshold and the leave-one-out threshold (one rank lower),
        so every flag is the wide search's. -inf (every row searched wide) where the search is exact anyway."""
        if not self._searches_cells(scaled):
            return float("-inf")
        n_rows = wide_val_scores.size
        rank = max(calibration_rank(n_rows, self.settings_.contamination) + 1, math.ceil(WIDE_SEARCH_SHARE * n_rows))
        return float(np.sort(wide_val_scores)[::-1][min(rank, n_rows) - 1])

    def _without_isolated(self, scaled: torch.Tensor, train_rows: np.ndarray) -> tuple[np.ndarray, int]:
        """`train_rows` less the `isolation_trim` share that an isolation forest isolates most easily, and how many
        rows that left out.

        The kNN term judges a row by its nearest training rows, so a cluster of anomalies in the history makes the
        next ones look dense, hence normal, and the SAE learns to reconstruct them. Isolation works the other way
        round: a small group far from the bulk is cut off by few random splits, however tight it is.
        """
        share = self.settings_.isolation_trim
        if share == 0 or train_rows.size < _MIN_ROWS:
            return train_rows, 0
        rows = scaled[train_rows].cpu().numpy()
        forest = IsolationForest(
            n_estimators=_ISOLATION_TREES,
            max_samples=min(_ISOLATION_SAMPLES, rows.shape[0]),
            random_state=self.settings_.random_state,
            n_jobs=1,
        ).fit(rows)
        isolation = -forest.score_samples(rows)
        n_left_out = int(share * train_rows.size)
        kept = np.argsort(isolation, kind="stable")[: train_rows.size - n_left_out]
        return train_rows[np.sort(kept)], n_left_out

    def add_calibration_rows(self, X, missing=None) -> SAEDetector:
        """Add held-out rows this detector never trained on (e.g. an update's evaluation split of the newest rows;
        `missing`: see module doc) to the validation rows its threshold and p-values are calibrated on. Returns
        self.

        More calibration rows narrow the band the flagged rate lies in (`sae_pipeline.thresholds.fpr_band`), and
        recent ones keep the threshold on the data that will be scored next.
        """
        self._check_fitted()
        self._calibrate(np.concatenate([self.validation_scores_, self.decision_function(X, missing)]))
        return self

    def _calibrate(self, scores: np.ndarray) -> None:
        """Set the threshold and the p-value reference from held-out scores (the one place both are set)."""
        self.validation_scores_ = np.sort(scores)
        self.threshold_ = threshold_at_fpr(scores, self.settings_.contamination)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)

    def _fit_reference(self, scaled: torch.Tensor, train_rows: np.ndarray, rng) -> np.ndarray:
        """Keep the kNN reference: at most reference_rows training rows (seeded); returns their row numbers.

        Not trimmed by reconstruction error: that helped on contaminated data and cost more on clean data
        (BENCHMARKS.md).
        """
        settings = self.settings_
        pool = train_rows
        if pool.size > settings.reference_rows:
            pool = np.sort(rng.choice(pool, size=settings.reference_rows, replace=False))
        self.reference_ = scaled[pool].clone() if settings.density_weight > 0 else scaled[:0].clone()
        self.reference_cells_ = scaled.new_zeros((0, scaled.shape[1]))
        if not settings.exact_neighbours and settings.density_weight > 0:
            self.reference_cells_ = fit_cells(self.reference_, settings.random_state).to(scaled.device)
        return pool

    def _cells(self) -> torch.Tensor | None:
        return None if self.settings_.exact_neighbours else self.reference_cells_

    def _has_density_term(self) -> bool:
        return self.settings_.density_weight > 0 and self.reference_.shape[0] >= 2

    def _searches_cells(self, scaled: torch.Tensor) -> bool:
        return self._has_density_term() and searches_cells(scaled, self._cells())

    def _gaps(
        self, scaled: torch.Tensor, in_reference: torch.Tensor | None = None, narrow: bool = False
    ) -> torch.Tensor | None:
        """The neighbour gaps of `scaled` (`sae_pipeline.neighbours`), or None without a density term."""
        if not self._has_density_term():
            return None
        if in_reference is not None:
            in_reference = in_reference.to(scaled.device)
        return neighbour_gaps(scaled, self.reference_, self.settings_.n_neighbors, self._cells(), in_reference, narrow)

    def _score_terms(
        self,
        scaled: torch.Tensor,
        residuals: torch.Tensor,
        mask: np.ndarray | None,
        in_reference: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Per-feature score terms of rows whose residuals are known: a search in two stages where the reference
        is searched through its cells.

        Every row is first searched narrow (its nearest cell: neighbours never nearer than the wide search's, so a
        score never lower); rows whose narrow score reaches `wide_search_from_`, and rows with a missing cell
        (whose score is the mean of their known terms alone), are searched again wide. Rows below the cut keep the
        narrow score: above the wide one where the nearest cell missed a neighbour (7-58% of rows on four
        benchmark sets, `benchmarks/neighbour_search.py`), and still below the cut. Flags, and the scores and
        p-values of every row above the cut, are the wide search's. The narrow search takes 0.7-2.0 us per row
        against 3.9-5.7 for the wide one (`benchmarks/neighbour_search.py`, BENCHMARKS.md).
        """
        if not self._searches_cells(scaled) or self.wide_search_from_ == float("-inf"):
            return fill_missing_terms(self._combine(residuals, self._gaps(scaled, in_reference)), mask)
        terms = fill_missing_terms(self._combine(residuals, self._gaps(scaled, in_reference, narrow=True)), mask)
        again = row_scores(terms) >= self.wide_search_from_
        if mask is not None:
            again |= mask.any(axis=1)
        rows = np.flatnonzero(again)
        if rows.size:
            picked = torch.as_tensor(rows, device=scaled.device)
            own = in_reference[picked] if in_reference is not None else None
            wide = self._combine(residuals[picked], self._gaps(scaled[picked], own))
            terms[rows] = fill_missing_terms(wide, mask[rows] if mask is not None else None)
        return terms

    def _combine(self, residuals: torch.Tensor, gaps: torch.Tensor | None) -> np.ndarray:
        """Per-feature score terms: residual / s_rec + density_weight x gap / s_gap (row mean = score), float32;
        `gaps` is scaled in place."""
        terms = residuals / self.score_scales_[0]
        if gaps is not None:
            terms.add_(gaps.mul_(self.settings_.density_weight / self.score_scales_[1]))
        return terms.cpu().numpy()

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this SAEDetector is not fitted yet: call fit(X) first")

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the detector was fitted on {self.n_features_in_}")
        scaled = self.scaler_.transform(X)
        np.clip(scaled, -INPUT_CLIP, INPUT_CLIP, out=scaled)
        return torch.as_tensor(scaled, dtype=torch.float32, device=self.device_)

    def _reconstruction_residuals(self, scaled: torch.Tensor) -> torch.Tensor:
        self.model_.eval()
        return row_errors(self.model_, scaled)

    @torch.no_grad()
    def _impute(self, scaled: torch.Tensor, mask: np.ndarray | None) -> torch.Tensor:
        """`scaled` with its missing cells replaced by the model's reconstruction of their rows. Only rows with a
        missing cell go through the model, in blocks of `_IMPUTE_BLOCK` rows padded to that size: a product over
        a handful of rows takes another kernel, whose rounding would make a row's score depend on how rows were
        batched, and a fixed shape always takes the same one."""
        if mask is None:
            return scaled
        rows = torch.as_tensor(np.flatnonzero(mask.any(axis=1)), device=scaled.device)
        cells = torch.as_tensor(mask, device=scaled.device)[rows]
        filled = scaled[rows]
        self.model_.eval()
        for _ in range(_IMPUTE_PASSES):
            reconstructions = torch.cat([self._reconstruct_padded(block) for block in filled.split(_IMPUTE_BLOCK)])
            filled = torch.where(cells, reconstructions, filled)
        return scaled.index_copy(0, rows, filled)

    def _reconstruct_padded(self, block: torch.Tensor) -> torch.Tensor:
        """The reconstruction of `block` (at most `_IMPUTE_BLOCK` rows) through a product of one fixed shape."""
        padded = torch.zeros((_IMPUTE_BLOCK, block.shape[1]), dtype=block.dtype, device=block.device)
        padded[: block.shape[0]] = block
        return self.model_(padded)[0][: block.shape[0]]

    def _prepared(self, X, missing) -> tuple[torch.Tensor, np.ndarray | None]:
        """Scaled rows with missing cells imputed, and the missing mask (None when nothing is missing)."""
        X = as_matrix(X)
        mask = missing_mask(missing, X.shape)
        return self._impute(self._to_tensor(X), mask), mask

    def _terms(self, X, missing) -> np.ndarray:
        scaled, mask = self._prepared(X, missing)
        return self._score_terms(scaled, self._reconstruction_residuals(scaled), mask)

    def decision_function(self, X, missing=None) -> np.ndarray:
        """Anomaly scores, shape (n_samples,): the row means of `feature_residuals`, higher = more anomalous."""
        self._check_fitted()
        return row_scores(self._terms(X, missing))

    def feature_residuals(self, X, missing=None) -> np.ndarray:
        """Per-feature score terms, shape (n_samples, n_features); row means are the scores.

        Each term is the feature's squared reconstruction residual / s_rec plus density_weight x its squared gap
        to the row's k-th nearest reference row / s_gap (module doc), so the largest terms name the features
        that make the row unusual.
        """
        self._check_fitted()
        return self._terms(X, missing)

    @torch.no_grad()
    def terms_and_codes(self, X, missing=None) -> tuple[np.ndarray, np.ndarray]:
        """`feature_residuals` and `transform` of the same rows from one forward pass (what scoring needs)."""
        self._check_fitted()
        scaled, mask = self._prepared(X, missing)
        self.model_.eval()
        if not scaled.shape[0]:
            return np.zeros((0, self.n_features_in_)), np.zeros((0, self.model_.n_latents), dtype=np.float32)
        residuals = torch.empty_like(scaled)  # filled block by block: no concatenated copies
        codes = scaled.new_empty((scaled.shape[0], self.model_.n_latents))
        for start in range(0, scaled.shape[0], _SCORE_CHUNK):
            rows = slice(start, start + _SCORE_CHUNK)
            reconstruction, codes[rows] = self.model_(scaled[rows])
            torch.sub(reconstruction, scaled[rows], out=residuals[rows]).square_()
        return self._score_terms(scaled, residuals, mask), codes.cpu().numpy()

    def predict(self, X, missing=None) -> np.ndarray:
        """0/1 labels, shape (n_samples,): 1 where the score exceeds `threshold_`."""
        return (self.decision_function(X, missing) > self.threshold_).astype(int)

    def score_pvalues(self, X=None, scores: np.ndarray | None = None, missing=None) -> np.ndarray:
        """P-values against held-out validation scores (small = unusual), with a fitted tail beyond the largest
        ones so they keep ranking (`thresholds.tail_pvalues`); pass X (and its `missing` mask) or its scores."""
        self._check_fitted()
        if scores is None:
            scores = self.decision_function(X, missing)
        return tail_pvalues(self.validation_scores_, scores)

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """The sparse codes, shape (n_samples, n_latents): learned features for downstream use."""
        self._check_fitted()
        scaled = self._to_tensor(as_matrix(X))
        chunks = [self.model_.encode(scaled[i : i + _SCORE_CHUNK]) for i in range(0, scaled.shape[0], _SCORE_CHUNK)]
        return torch.cat(chunks).cpu().numpy()

    # --- persistence: safetensors for arrays, JSON for everything else; nothing is unpickled -------------------
    # The detector turns itself into named files and back; where they are stored is the caller's business
    # (`save`/`load`: a local folder; `sae_pipeline.registry`: model versions on any storage).

    def to_files(self, metadata: dict | None = None) -> dict[str, bytes]:
        """The saved detector: {`WEIGHTS_FILE`: safetensors arrays, `MANIFEST_FILE`: JSON}. `metadata`'s keys are
        added to the JSON manifest (callers keep their own records there); write the manifest last, so that its
        presence marks a complete folder."""
        self._check_fitted()
        tensors = {
            f"model.{name}": value.detach().cpu().contiguous() for name, value in self.model_.state_dict().items()
        }
        tensors["scaler.center"] = torch.as_tensor(self.scaler_.center_)
        tensors["scaler.scale"] = torch.as_tensor(self.scaler_.scale_)
        tensors["validation_scores"] = torch.as_tensor(self.validation_scores_)
        tensors["decision_scores"] = torch.as_tensor(self.decision_scores_)
        tensors["reference"] = self.reference_.detach().cpu().contiguous()
        tensors["reference_cells"] = self.reference_cells_.detach().cpu().contiguous()
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "n_latents": self.model_.n_latents,
            "k": self.model_.k,
            "threshold": self.threshold_,
            "score_scales": list(self.score_scales_),
            "wide_search_from": self.wide_search_from_ if math.isfinite(self.wide_search_from_) else None,
            "training_report": self.training_report_,
            **(metadata or {}),
        }
        return {WEIGHTS_FILE: save_safetensors(tensors), MANIFEST_FILE: json.dumps(manifest, indent=2).encode()}

    @classmethod
    def from_files(
        cls, files: Mapping[str, bytes], device: str | None = None, manifest: dict | None = None
    ) -> SAEDetector:
        """Rebuild a fitted detector from the files of `to_files` (format versions 1-4); `device` overrides the
        saved device choice; `manifest`: `files[MANIFEST_FILE]` already parsed by `parse_manifest` (a pipeline
        model's manifest holds its drift reference, and parsing it twice costs more than building the network).
        Raises `ModelFileError` naming the file that is missing, corrupt or of another format.

        Saved parameters are not validated again: every folder a released version wrote must keep loading.
        """
        for name in (MANIFEST_FILE, WEIGHTS_FILE):
            if name not in files:
                raise ModelFileError(name, "missing")
        manifest = manifest if manifest is not None else parse_manifest(files[MANIFEST_FILE])
        version = manifest["format_version"]
        params = dict(manifest["params"])
        if version == 1:  # scored by reconstruction alone, unscaled
            params["density_weight"] = 0.0
        if version < 3:  # its reference was searched exactly
            params["exact_neighbours"] = True
        detector = cls(**{**params, **({"device": device} if device else {})})
        detector.settings_ = DetectorSettings.model_construct(**detector.get_params())
        detector.device_ = resolve_device(detector.device)
        detector.n_features_in_ = manifest["n_features_in"]
        model = SparseAutoencoder(manifest["n_features_in"], manifest["n_latents"], detector.sparsity, manifest["k"])
        # A truncated, corrupt or mismatched weights file must name itself, not surface as a bare library error.
        try:
            tensors = load_safetensors(files[WEIGHTS_FILE])
            detector.scaler_ = RobustScaler.from_dict(
                {"center": tensors["scaler.center"].numpy(), "scale": tensors["scaler.scale"].numpy()}
            )
            state = {name[len("model.") :]: t for name, t in tensors.items() if name.startswith("model.")}
            model.load_state_dict(state)
            detector.validation_scores_ = tensors["validation_scores"].numpy()
            detector.decision_scores_ = tensors["decision_scores"].numpy()
        except (SafetensorError, KeyError, RuntimeError) as error:
            raise ModelFileError(WEIGHTS_FILE, f"corrupt or incompatible weights file ({error})") from error
        detector.model_ = model.to(detector.device_).eval()
        detector.threshold_ = float(manifest["threshold"])
        detector.score_scales_ = tuple(manifest.get("score_scales", (1.0, 1.0)))
        cut = manifest.get("wide_search_from")  # None: every row searched wide (as all were before format 4)
        detector.wide_search_from_ = float("-inf") if cut is None else float(cut)
        reference = tensors.get("reference", torch.zeros((0, manifest["n_features_in"])))
        detector.reference_ = reference.to(detector.device_)
        cells = tensors.get("reference_cells", torch.zeros((0, manifest["n_features_in"])))
        detector.reference_cells_ = cells.to(detector.device_)
        detector.labels_ = (detector.decision_scores_ > detector.threshold_).astype(int)
        detector.training_report_ = manifest["training_report"]
        return detector

    def save(self, folder: str | os.PathLike, metadata: dict | None = None) -> None:
        """Write `model.safetensors` and then `model.json` (see `to_files`) into the local folder `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = self.to_files(metadata)
        for name in sorted(files, key=lambda name: name == MANIFEST_FILE):  # the manifest last
            (folder / name).write_bytes(files[name])

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | None = None) -> SAEDetector:
        """Rebuild a fitted detector saved by `save` into the local folder `folder` (see `from_files`)."""
        folder = Path(folder)
        files = {name: (folder / name).read_bytes() for name in (MANIFEST_FILE, WEIGHTS_FILE)}
        try:
            return cls.from_files(files, device)
        except ModelFileError as error:
            raise ModelFileError(str(folder / error.file), error.problem) from error.__cause__


SAEDetector.__doc__ = SAEDetector.__doc__.replace("{parameters}", numpydoc_parameters(DetectorSettings))
