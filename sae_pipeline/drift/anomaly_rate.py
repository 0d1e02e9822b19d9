"""Anomaly rate: is the partition flagging more rows than the detector's target false-positive rate explains?

Why a test and not a ratio: on a small partition a few extra flags are noise. The one-sided exact test asks how
likely at least this many flags are for a detector calibrated at the target rate. When the reference says how many
held-out rows its threshold was calibrated on, the count is tested against the beta-binomial law of such a
threshold (`sae_pipeline.thresholds.flags_upper_pvalue`): a threshold set on n rows flags fresh rows at a rate
that itself varies by about sqrt(target / n), and a plain binomial test at exactly the target would call every
large partition of a well-calibrated model "above the target".
"""

from __future__ import annotations

import math

from sae_pipeline.drift.common import finite, fraction
from sae_pipeline.thresholds import flags_upper_pvalue


def anomaly_rate_section(
    n_rows: int, n_flagged: int, expected_rate: float | None, alpha: float, calibration_rows: int | None = None
) -> dict:
    """Observed anomaly rate, and a one-sided exact test against the target FPR at level ``alpha`` (module doc)."""
    n, k = n_rows, n_flagged
    rate = fraction(k, n)
    p_value = z_score = None
    if expected_rate is not None and n:
        p_value = flags_upper_pvalue(k, n, expected_rate, calibration_rows)
        z_score = finite((rate - expected_rate) / math.sqrt(expected_rate * (1.0 - expected_rate) / n))
    return {
        "n_rows": n,
        "n_flagged": k,
        "observed_rate": rate,
        "expected_rate": expected_rate,
        "calibration_rows": calibration_rows if expected_rate is not None else None,
        "ratio_to_expected": None if not expected_rate else rate / expected_rate,
        "z_score": z_score,
        "p_value": p_value,
        "alpha": alpha,
        "anomaly_rate_exceeds_expected": p_value is not None and p_value <= alpha,
    }
