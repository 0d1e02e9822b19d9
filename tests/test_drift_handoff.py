"""A scoring run whose drift policy asks for training hands it to the training deployment, without failing."""

from __future__ import annotations

import pytest
import yaml

from flows.lake_pipeline import lake_pipeline, score_flow
from sae_pipeline.runs import RunSummary

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_drift_request_is_recorded_and_a_missing_deployment_is_reported_not_raised(lake_config):
    raw = yaml.safe_load(lake_config.read_text())
    raw["training"]["partitions"] = ["day=2026-11-01", "day=2026-11-02"]  # day 3 drifts and is not trained on
    lake_config.write_text(yaml.safe_dump(raw))
    lake_pipeline(str(lake_config), mode="train")
    result = score_flow(str(lake_config), on_drift="start-training", training_deployment="no-such-flow/nowhere")
    summary = RunSummary.model_validate({k: v for k, v in result.items() if k != "drift_handoff"})
    assert "day=2026-11-03" in summary.drift_policy["partitions"] and summary.drift_policy["training"] is None
    assert "left to the next train-or-update run" in summary.message
    handoff = result["drift_handoff"]
    assert handoff["deployment"] == "no-such-flow/nowhere" and "day=2026-11-03" in handoff["partitions"]
    assert "error" in handoff and len(summary.partitions) == 3
