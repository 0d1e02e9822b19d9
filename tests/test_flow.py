"""The Prefect flow under Prefect's test harness: contracts, row conservation, reruns, scoring-only runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import pytest

from flows.lake_pipeline import lake_pipeline
from sae_pipeline.config import load_config
from sae_pipeline.registry import load_model
from sae_pipeline.runs import RunSummary
from sae_pipeline.schema import SCORE_COLUMNS, scored_output_schema

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _scored(config) -> pl.DataFrame:
    return pl.scan_parquet(config.output.scored_uri, hive_partitioning=True, hive_schema={"day": pl.Date}).collect()


def test_run_writes_contracted_outputs_and_conserves_rows(lake_config):
    summary = RunSummary.model_validate(lake_pipeline(str(lake_config)))
    config = load_config(lake_config)

    scored = _scored(config)
    assert scored.height == summary.totals["rows_scored"] == summary.totals["rows_valid"]
    assert summary.totals["rows_in"] == 3 * 600 == summary.totals["rows_scored"] + summary.totals["rows_quarantined"]
    scored_output_schema(config).validate(scored.drop("day"))
    assert list(scored.columns[-len(SCORE_COLUMNS) - 1 : -1]) == list(SCORE_COLUMNS)
    assert ds.dataset(config.output.scored_uri, partitioning="hive").count_rows() == scored.height

    quarantine = pl.scan_parquet(config.output.quarantine_uri, hive_partitioning=True).collect()
    assert quarantine.height == summary.totals["rows_quarantined"] > 0
    assert quarantine.get_column("quarantine_reasons").list.len().min() >= 1
    assert (quarantine.get_column("anomaly_kind") == "invalid").all()

    for partition in summary.partitions:
        report_html = Path(partition.drift_report_uri)
        report = json.loads(report_html.with_name("report.json").read_text())
        assert report["partition"] == partition.partition and report["schema_version"] == 1
        assert "<html" in report_html.read_text()[:200].lower()
    assert (Path(config.output.drift_uri) / "index.html").exists()
    assert summary.evaluation["auc_roc"] > 0.8
    # anomaly_kind is a second, string label column: recall per kind (invalid rows were quarantined, not scored).
    by_kind = summary.evaluation["by_kind"]
    assert set(by_kind) == {"spike", "broken_correlation", "rare_category"}
    assert sum(kind["rows"] for kind in by_kind.values()) == summary.evaluation["positives"]

    model = load_model(summary.model_uri)
    assert model.metadata.trained_on == [p.partition for p in summary.partitions]
    assert model.metadata.data_fingerprints.keys() == {p.partition for p in summary.partitions}
    assert json.loads(Path(summary.summary_uri).read_text()) == summary.model_dump(mode="json")  # what it returned

    # Flagged rows are recorded per partition and grouped into the incidents table; the summary names the champion.
    flagged = pl.scan_parquet(config.output.flagged_uri, hive_partitioning=True).collect()
    assert flagged.height == summary.totals["rows_flagged"] > 0 and flagged.get_column("is_anomaly").all()
    incidents = pl.read_parquet(Path(config.output.incidents_uri) / "part-0.parquet")
    assert incidents.get_column("rows").sum() == flagged.height
    assert summary.incidents.total == summary.incidents.new == summary.incidents.open == incidents.height
    assert summary.champion == summary.model_version and summary.stale is None
    # The anomalies pages are written with the incidents: over the lake, and beside each partition's drift report.
    index = (Path(config.output.drift_uri) / "anomalies.html").read_text()
    assert f"of {incidents.height} in 3 scored partition(s)" in index
    assert all(incident_id in index for incident_id in incidents.get_column("incident_id"))
    for partition in summary.partitions:
        assert (Path(partition.drift_report_uri).parent / "anomalies.html").exists()
        report = json.loads(Path(partition.drift_report_uri).with_name("report.json").read_text())
        assert report["model_version"] == summary.model_version and report["reference"]


def test_backfill_replaces_partitions_and_score_mode_reuses_the_champion(lake_config):
    first = RunSummary.model_validate(lake_pipeline(str(lake_config)))
    second = RunSummary.model_validate(lake_pipeline(str(lake_config), mode="score", backfill=True))
    config = load_config(lake_config)
    assert second.model_uri == first.model_uri and second.training is None
    assert [p.reason for p in second.partitions] == ["backfill"] * 3
    scored = _scored(config)
    assert scored.height == first.totals["rows_scored"]  # replaced, not duplicated
    assert scored.get_column("model_version").unique().to_list() == [first.model_version]
    assert second.incidents.total == first.incidents.total and second.incidents.new == 0  # not duplicated
    for partition in second.partitions:
        assert len(list(Path(partition.scored_uri).glob("*.parquet"))) == 1
    assert not any(Path(config.output.staging_uri).glob("*.parquet"))


def test_train_mode_writes_model_but_no_scores(lake_config):
    summary = lake_pipeline(str(lake_config), mode="train")
    assert isinstance(summary, RunSummary) and summary.training.action == "train" and summary.totals["rows_scored"] == 0
    assert RunSummary.model_validate_json(Path(summary.summary_uri).read_text()) == summary
    assert not Path(load_config(lake_config).output.scored_uri).exists()


def test_run_publishes_summary_and_drift_artifacts(lake_config):
    from prefect.client.orchestration import get_client

    lake_pipeline(str(lake_config))

    async def artifact_keys() -> set[str]:
        async with get_client() as client:
            return {artifact.key for artifact in await client.read_artifacts()}

    keys = asyncio.run(artifact_keys())
    assert "sae-run-summary" in keys and "drift-day-2026-11-01" in keys
