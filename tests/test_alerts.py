"""Events and alerts through Prefect: a real Prefect server (the session's harness), the shipped automations
installed with `alerts install`, the pipeline run as a flow, and a webhook receiver on 127.0.0.1 that must get the
alert with the incident's id and explanation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows import alerts as alert_commands
from sae_pipeline import alerts
from sae_pipeline.config import load_config
from sae_pipeline.incidents.build import read_incidents
from sae_pipeline.ledger import Ledger
from tests.conftest import add_outage_rows, write_lake_config

HOST = "web-alert"
OUTAGE = [dt.datetime(2026, 11, 3, 9, 0), dt.datetime(2026, 11, 3, 9, 10), dt.datetime(2026, 11, 3, 9, 20)]
#: A credential that must never reach an event: it sits in the output URI's user info (as a pasted URL would).
SECRET = "hunter2-not-a-real-password"


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST's arrival time and JSON body."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 30) -> tuple[float, dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for arrived, body in list(self.received):
                if text in json.dumps(body):
                    return arrived, body
            time.sleep(0.1)
        raise AssertionError(f"no webhook call mentioning {text!r} in {timeout} s; got {self.received}")


def _add_outage_day(lake: Path) -> None:
    """A third day: a copy of the second with `HOST` far off normal at `OUTAGE`."""
    frame = pl.read_parquet(lake / "day=2026-11-02" / "part-0.parquet")
    folder = lake / "day=2026-11-03"
    folder.mkdir()
    frame.with_columns(pl.col("event_time") + pl.duration(days=1)).write_parquet(folder / "part-0.parquet")
    add_outage_rows(lake, HOST, OUTAGE)


@pytest.fixture(scope="module")
def alerted(tmp_path_factory, prefect_harness):
    """Automations installed against a webhook receiver; a run trains and scores two days, a second scores a third
    day holding an outage. Yields (config path, receiver, second run's summary)."""
    from flows.lake_pipeline import run_in_process

    root = tmp_path_factory.mktemp("alerts")
    path = write_lake_config(root, days=2, rows_per_day=400, max_steps=40)
    raw = yaml.safe_load(path.read_text())
    raw["lake"]["expected_every"] = "1d"  # the lake ends in November 2026: late
    raw["events"] = {"explanation_values": ["latency_ms"]}
    path.write_text(yaml.safe_dump(raw))
    receiver = Receiver()
    installed = alert_commands.install(webhook=receiver.url)
    assert len(installed) == len(list(alert_commands.AUTOMATIONS.glob("*.yaml")))
    run_in_process(config_path=str(path))
    _add_outage_day(root / "lake")
    summary = run_in_process(config_path=str(path), mode="score")
    yield path, receiver, summary
    receiver.server.shutdown()


def test_an_opened_incident_reaches_the_webhook_with_its_id_and_explanation(alerted):
    path, receiver, summary = alerted
    config = load_config(path)
    (incident,) = read_incidents(config).filter(pl.col("entity") == HOST).iter_rows(named=True)
    assert incident["incident_id"] in summary.incidents.opened
    arrived, body = receiver.wait_for(incident["incident_id"])
    text = body["text"]
    assert f"incident {incident['incident_id']} opened: entity {HOST}" in body["subject"] + text
    assert "latency_ms" in text and "typical" in text  # the allowed column's value and typical value
    committed = Ledger(config.output.ledger_uri).entries()["day=2026-11-03"].committed_at
    latency = arrived - committed.timestamp()
    print(f"committed partition -> webhook: {latency:.2f} s")
    assert 0 < latency < 30


def test_a_late_lake_reaches_the_webhook(alerted):
    _, receiver, summary = alerted
    assert summary.freshness.late and summary.freshness.next_expected == "day=2026-11-04"
    _, body = receiver.wait_for("day=2026-11-04 was due by")
    assert "sae-pipeline.partition.late" in body["subject"] and "latest day=2026-11-03" in body["text"]
    trend = (Path(load_config(alerted[0]).output.drift_uri) / "index.html").read_text()
    assert "Late: day=2026-11-04 was due by 2026-11-05 00:00 UTC." in trend  # the run's verdict, on the page


def test_events_on_the_server_carry_the_partition_verdicts(alerted):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    path, _, summary = alerted

    async def read() -> list:
        async with get_client() as client:
            page = await client.read_events(filter=EventFilter(event=EventNameFilter(name=[alerts.SCORED])), limit=50)
        return page.events

    scored = {event.resource.id: event for event in asyncio.run(read())}
    output = load_config(path).output.uri
    event = scored[f"sae-pipeline.partition.{output}/day=2026-11-03"]
    payload = event.payload
    assert payload["rows_in"] == summary.partitions[0].rows_in and payload["incidents_opened"] >= 1
    assert payload["model_version"] == summary.model_version and payload["report"].endswith("report.html")
    assert {"flagged_rate", "drift_status", "dataset_drift", "drift_share", "volume"} <= set(payload)


def test_payloads_hold_no_row_values_beyond_the_allowed_columns(alerted):
    path, _, summary = alerted
    config = load_config(path)
    (incident,) = read_incidents(config).filter(pl.col("entity") == HOST).iter_rows(named=True)
    (event,) = alerts.incident_events(config, [incident["incident_id"]])
    assert event.labels == {alerts.SEVERITY_LABEL: "critical"}
    for item in event.payload["explanation"]:
        if item["column"] != "latency_ms":  # not in events.explanation_values: its name and share only
            assert set(item) <= {"column", "share"}
    assert any(item["column"] == "latency_ms" and item["value"] == 60_000.0 for item in event.payload["explanation"])
    hidden = config.model_copy(update={"events": config.events.model_copy(update={"explanation_values": []})})
    (bare,) = alerts.incident_events(hidden, [incident["incident_id"]])
    assert all(set(item) <= {"column", "share"} for item in bare.payload["explanation"])
    assert "60000" not in json.dumps(bare.payload)


def test_uris_in_events_lose_their_credentials():
    assert alerts.public_uri(f"s3://key:{SECRET}@bucket/out?X-Amz-Signature=abc") == "s3://bucket/out"
    assert alerts.public_uri("/data/out") == "/data/out"
    assert alerts.public_uri(f"https://user:{SECRET}@minio:9000/b") == "https://minio:9000/b"


def test_promotions_and_a_rollback_reach_the_webhook(alerted, capsys):
    from flows.cli import main
    from sae_pipeline import tables, updating
    from sae_pipeline.registry import ModelRegistry

    path, receiver, summary = alerted
    receiver.wait_for(f"champion None -> {summary.champion}")  # the first run's training promoted it
    config = load_config(path)
    registry = ModelRegistry(config.output.models_uri)
    retrained = updating.train_or_update(config, tables.partition_records(config.lake), retrain=True)
    if not retrained.promoted:
        registry.promote(retrained.model_version, "the test's new champion")
    assert main(["models", "rollback", "--config", str(path)]) == 0
    assert registry.champion() == summary.champion
    _, body = receiver.wait_for("sae-pipeline.model.rolled-back")
    assert f"champion {retrained.model_version} -> {summary.champion} (rolled-back)" in body["text"]


def test_install_takes_an_existing_block_by_slug_or_name(alerted):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    _, receiver, _ = alerted
    saved = CustomWebhookNotificationBlock(name="ops", url=receiver.url, json_data={"text": "{{body}}"}).save(
        "ops-test"
    )
    assert alert_commands.block_id("custom-webhook/ops-test") == saved == alert_commands.block_id("ops-test")
    automations = alert_commands.load_automations(block_document_id=saved)
    assert {action["block_document_id"] for a in automations for action in a["actions"]} == {str(saved)}
    with pytest.raises(ValueError, match="--webhook URL or --block NAME"):
        alert_commands.install()


def test_a_run_with_nothing_to_score_still_marks_a_late_lake_on_the_trend_page(alerted):
    """Last in this module: one more scoring run over the unchanged lake scores nothing and rewrites only the trend
    page (the lake is late), with this run's check time."""
    from flows.lake_pipeline import run_in_process

    path, _, _ = alerted
    drift_dir = Path(load_config(path).output.drift_uri)
    before = {file: file.stat().st_mtime_ns for file in drift_dir.rglob("*") if file.is_file()}
    summary = run_in_process(config_path=str(path), mode="score")
    assert summary.partitions == [] and summary.freshness.late
    assert "nothing written but the trend page (the lake is late)" in summary.message
    after = {file: file.stat().st_mtime_ns for file in drift_dir.rglob("*") if file.is_file()}
    assert [file.name for file in before if before[file] != after[file]] == ["index.html"]
    checked = summary.freshness.checked_at.strftime("%Y-%m-%d %H:%M")
    assert f"Checked at {checked} UTC." in (drift_dir / "index.html").read_text()


def test_explanation_values_must_name_configured_columns(tmp_path):
    from sae_pipeline.config import ConfigError

    path = write_lake_config(tmp_path, days=1, rows_per_day=10)
    raw = yaml.safe_load(path.read_text())
    raw["events"] = {"explanation_values": ["latency_ms", "password"]}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"events.explanation_values .*\['password'\]"):
        load_config(path)
