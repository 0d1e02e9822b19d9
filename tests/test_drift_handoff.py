"""A scoring run whose drift policy asks for training hands it to the training deployment, without failing, and its
run summary (returned and in `runs/<run id>.json`) records the hand-off."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.lake_pipeline import lake_pipeline, score_flow, train_or_update_flow
from sae_pipeline.runs import RunSummary
from tests.conftest import write_lake_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def lake_config(tmp_path: Path) -> Path:
    return write_lake_config(tmp_path, max_steps=60)


def _train_without_day_3(lake_config: Path) -> None:
    raw = yaml.safe_load(lake_config.read_text())
    raw["training"]["partitions"] = ["day=2026-11-01", "day=2026-11-02"]  # day 3 drifts and is not trained on
    lake_config.write_text(yaml.safe_dump(raw))
    lake_pipeline(str(lake_config), mode="train")


def _on_disk(summary: RunSummary) -> RunSummary:
    return RunSummary.model_validate_json(Path(summary.summary_uri).read_text())


def test_drift_request_is_recorded_and_a_missing_deployment_is_reported_not_raised(lake_config):
    _train_without_day_3(lake_config)
    summary = score_flow(str(lake_config), on_drift="start-training", training_deployment="no-such-flow/nowhere")
    assert isinstance(summary, RunSummary)
    assert "day=2026-11-03" in summary.drift_policy.partitions and summary.drift_policy.training is None
    assert "left to the next train-or-update run" in summary.message
    handoff_record = summary.drift_handoff
    assert handoff_record.deployment == "no-such-flow/nowhere" and "day=2026-11-03" in handoff_record.partitions
    assert handoff_record.error and handoff_record.flow_run is None and len(summary.partitions) == 3
    assert _on_disk(summary) == summary


@pytest.fixture
def training_deployment() -> str:
    """The training flow registered as a real deployment on the test API (no worker: its runs stay scheduled)."""
    name = f"handoff-{uuid.uuid4().hex[:8]}"
    train_or_update_flow.to_deployment(name=name).apply()
    return f"{train_or_update_flow.name}/{name}"


def _flow_runs_of(deployment: str) -> list:
    async def read() -> list:
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id]))
            )

    return asyncio.run(read())


def test_score_flow_returns_the_run_summary_on_disk_with_the_started_training_run(lake_config, training_deployment):
    _train_without_day_3(lake_config)
    summary = score_flow(str(lake_config), on_drift="start-training", training_deployment=training_deployment)

    assert isinstance(summary, RunSummary)
    (started,) = _flow_runs_of(training_deployment)
    assert summary.drift_handoff.flow_run == started.name and summary.drift_handoff.error is None
    asked = list(summary.drift_policy.partitions)
    assert "day=2026-11-03" in asked and summary.drift_handoff.partitions == asked
    assert started.parameters == {"config_path": str(lake_config), "drifted": asked}
    assert _on_disk(summary) == summary
    assert RunSummary.model_validate(summary.model_dump(mode="json")) == summary  # what a deployment's caller gets


def test_recording_only_leaves_no_hand_off(lake_config, training_deployment):
    _train_without_day_3(lake_config)
    summary = score_flow(str(lake_config), backfill=True, training_deployment=training_deployment)
    assert summary.drift_policy.partitions and summary.drift_handoff is None
    assert _flow_runs_of(training_deployment) == []
    assert _on_disk(summary) == summary
