"""Tests for threshold calibration at a target false-positive rate and empirical p-values."""

from __future__ import annotations

import numpy as np
import pytest

from sae_pipeline.thresholds import (
    BAND_COVERAGE,
    calibration_rank,
    empirical_pvalues,
    flagged_leaving_one_out,
    fpr_band,
    threshold_at_fpr,
)


@pytest.mark.parametrize("target_fpr", [0.01, 0.05, 0.2])
def test_threshold_flags_about_target_share_of_reference(target_fpr):
    reference = np.random.default_rng(0).uniform(size=10_000)
    threshold = threshold_at_fpr(reference, target_fpr)
    flagged = np.mean(reference > threshold)
    assert flagged == pytest.approx(target_fpr, abs=0.002)
    assert flagged <= target_fpr  # the k-th largest never flags more than the target
    assert threshold == pytest.approx(1 - target_fpr, abs=0.02)


def test_threshold_transfers_to_fresh_data_from_same_distribution():
    rng = np.random.default_rng(1)
    threshold = threshold_at_fpr(rng.gamma(2.0, 1.0, 10_000), 0.01)
    fresh = rng.gamma(2.0, 1.0, 10_000)
    assert np.mean(fresh > threshold) == pytest.approx(0.01, abs=0.004)


def test_threshold_is_a_reference_value_and_order_independent():
    reference = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    threshold = threshold_at_fpr(reference, 0.2)
    assert threshold in reference
    assert threshold == threshold_at_fpr(reference[::-1], 0.2)
    assert threshold_at_fpr([7.0], 0.5) == 7.0


def test_constant_reference_flags_nothing_like_it():
    threshold = threshold_at_fpr(np.full(100, 0.3), 0.01)
    assert threshold == 0.3
    assert not np.any(np.full(10, 0.3) > threshold)


@pytest.mark.parametrize("target_fpr", [0.0, 1.0, -0.1, 1.5])
def test_invalid_fpr_raises(target_fpr):
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_at_fpr(np.arange(10.0), target_fpr)


def test_empty_reference_raises():
    with pytest.raises(ValueError, match="reference"):
        threshold_at_fpr(np.array([]), 0.01)


def test_pvalues_in_unit_interval_and_never_zero():
    reference = np.random.default_rng(2).normal(size=1000)
    scores = np.array([-1e9, -1.0, 0.0, 1.0, 1e9])
    p = empirical_pvalues(reference, scores)
    assert p.shape == scores.shape
    assert np.all((p > 0) & (p <= 1))
    assert p[0] == 1.0  # below every reference score
    assert p[-1] == pytest.approx(1 / 1001)  # above every reference score: smallest possible, not 0


def test_pvalues_monotone_decreasing_in_score():
    reference = np.random.default_rng(3).exponential(size=500)
    scores = np.linspace(-1, 10, 300)
    p = empirical_pvalues(reference, scores)
    assert np.all(np.diff(p) <= 0)
    assert p[0] > p[-1]


def test_pvalues_exact_formula_with_ties():
    reference = np.array([1.0, 2.0, 2.0, 3.0])
    # (1 + #{ref >= s}) / (n + 1)
    assert empirical_pvalues(reference, [2.0, 2.5, 0.0, 3.0, 3.5]).tolist() == [4 / 5, 2 / 5, 5 / 5, 2 / 5, 1 / 5]


def test_pvalues_do_not_depend_on_reference_order():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=200)
    scores = rng.normal(size=50)
    np.testing.assert_array_equal(
        empirical_pvalues(reference, scores), empirical_pvalues(rng.permutation(reference), scores)
    )


def test_pvalues_roughly_uniform_on_reference_like_data():
    rng = np.random.default_rng(5)
    reference = rng.lognormal(size=5000)
    p = empirical_pvalues(reference, rng.lognormal(size=5000))
    assert p.mean() == pytest.approx(0.5, abs=0.02)
    # Tolerance ~3 sd of an empirical CDF estimated from 5000 reference and 5000 fresh rows.
    for level in (0.01, 0.05, 0.1, 0.5, 0.9):
        assert np.mean(p <= level) == pytest.approx(level, abs=max(0.005, 3 * np.sqrt(2 * level * (1 - level) / 5000)))


def test_threshold_is_the_conformal_rank_and_flags_exactly_the_small_pvalues():
    """k = floor(target (n + 1)): flagged exactly when the p-value is at most k / (n + 1) <= target."""
    reference = np.random.default_rng(5).normal(size=999)
    assert calibration_rank(999, 0.005) == 5 and calibration_rank(10, 0.005) == 1  # too few rows: the largest
    threshold = threshold_at_fpr(reference, 0.005)
    assert threshold == np.sort(reference)[-5]
    scores = np.random.default_rng(6).normal(size=5_000) * 1.5
    flagged = scores > threshold
    assert np.array_equal(flagged, empirical_pvalues(reference, scores) <= 5 / 1000)


@pytest.mark.parametrize(("n_calibration", "target_fpr"), [(400, 0.005), (2_000, 0.005), (2_000, 0.01)])
def test_fpr_band_holds_over_calibration_draws(n_calibration, target_fpr):
    """The false-positive rate of fresh rows lies in the stated band for about 95% of calibration draws, and its
    mean is at most the target (uniform scores: the rate of a threshold t is 1 - t)."""
    draws = np.random.default_rng(7).uniform(size=(4_000, n_calibration))
    rates = 1 - np.array([threshold_at_fpr(row, target_fpr) for row in draws])
    band = fpr_band(n_calibration, target_fpr)
    assert np.mean([band.contains(rate) for rate in rates]) == pytest.approx(BAND_COVERAGE, abs=0.015)
    assert rates.mean() == pytest.approx(band.expected, rel=0.05) and band.expected <= target_fpr
    assert band.low < target_fpr < band.high
    assert fpr_band(4 * n_calibration, target_fpr).high < band.high  # more calibration rows, a narrower band


def test_fpr_band_for_a_finite_number_of_fresh_rows_is_wider():
    rates = fpr_band(2_000, 0.01)
    counted = fpr_band(2_000, 0.01, n_rows=3_000)
    assert counted.low <= rates.low and counted.high >= rates.high


def test_leave_one_out_flags_match_thresholds_set_without_each_row():
    reference = np.random.default_rng(8).gamma(2.0, 1.0, 300)
    rows = np.argsort(reference)[::-3]  # every third row from the top
    expected = [reference[i] > threshold_at_fpr(np.delete(reference, i), 0.02) for i in rows]
    flagged = flagged_leaving_one_out(reference, reference[rows], 0.02)
    assert flagged.tolist() == expected and 0 < flagged.sum() < rows.size
