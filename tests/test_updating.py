"""The promotion rule and the model/schema compatibility check, on plain numbers and configs."""

from __future__ import annotations

import pytest
import yaml

from sae_pipeline.config import PipelineConfig
from sae_pipeline.updating import promotion_decision
from tests.conftest import SAMPLE_CONFIG


def _config(**promotion) -> PipelineConfig:
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text())
    raw["registry"] = {"promotion": promotion}
    return PipelineConfig.model_validate(raw)


CHAMPION = {"trimmed_mean_error": 0.10, "flagged_rate": 0.012}


@pytest.mark.parametrize(
    "challenger, promoted, why",
    [
        ({"trimmed_mean_error": 0.08, "flagged_rate": 0.010}, True, "no worse"),
        ({"trimmed_mean_error": 0.104, "flagged_rate": 0.011}, True, "no worse"),  # within the 5% tolerance
        ({"trimmed_mean_error": 0.12, "flagged_rate": 0.010}, False, "reconstruction error"),
        ({"trimmed_mean_error": 0.09, "flagged_rate": 0.05}, False, "flagged rate"),
    ],
)
def test_no_worse_rule_compares_error_and_flagged_rate_on_the_same_rows(challenger, promoted, why):
    decision, reason = promotion_decision(_config(), challenger, CHAMPION)
    assert decision is promoted and why in reason
    assert "vs champion 0.1" in reason


def test_policies_always_and_manual_and_first_model():
    worse = {"trimmed_mean_error": 9.0, "flagged_rate": 0.5}
    assert promotion_decision(_config(policy="always"), worse, CHAMPION)[0] is True
    assert promotion_decision(_config(policy="manual"), {"trimmed_mean_error": 0.0, "flagged_rate": 0.01}, CHAMPION) == (
        False, "promotion policy is manual"
    )
    assert promotion_decision(_config(), worse, None) == (True, "no comparable champion")


def test_tolerances_change_the_verdict():
    challenger = {"trimmed_mean_error": 0.12, "flagged_rate": 0.012}
    assert promotion_decision(_config(), challenger, CHAMPION)[0] is False
    assert promotion_decision(_config(error_tolerance=0.25), challenger, CHAMPION)[0] is True
    drifting = {"trimmed_mean_error": 0.10, "flagged_rate": 0.03}
    assert promotion_decision(_config(), drifting, CHAMPION)[0] is False
    assert promotion_decision(_config(flagged_rate_tolerance=0.05), drifting, CHAMPION)[0] is True
