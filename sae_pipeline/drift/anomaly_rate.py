"""Anomaly rate: is the partition flagging more rows than the detector's target false-positive rate explains?

Why a test and not a ratio: on a small partition a few extra flags are noise. The one-sided exact binomial test
asks how likely at least this many flags are if each row were flagged with the target rate.
"""

from __future__ import annotations

import math

from scipy import stats

from sae_pipeline.drift.common import finite, fraction


def binomial_upper_pvalue(n_flagged: int, n: int, rate: float) -> float:
    """P(X >= n_flagged) for X ~ Binomial(n, rate): small when more rows are flagged than ``rate`` explains."""
    if n == 0:
        return 1.0
    return float(stats.binom.sf(n_flagged - 1, n, rate))


def anomaly_rate_section(n_rows: int, n_flagged: int, expected_rate: float | None, alpha: float) -> dict:
    """Observed anomaly rate, and a one-sided exact binomial test against the target FPR at level ``alpha``."""
    n, k = n_rows, n_flagged
    rate = fraction(k, n)
    p_value = z_score = None
    if expected_rate is not None and n:
        p_value = binomial_upper_pvalue(k, n, expected_rate)
        z_score = finite((rate - expected_rate) / math.sqrt(expected_rate * (1.0 - expected_rate) / n))
    return {
        "n_rows": n,
        "n_flagged": k,
        "observed_rate": rate,
        "expected_rate": expected_rate,
        "ratio_to_expected": None if not expected_rate else rate / expected_rate,
        "z_score": z_score,
        "p_value": p_value,
        "alpha": alpha,
        "anomaly_rate_exceeds_expected": p_value is not None and p_value <= alpha,
    }
