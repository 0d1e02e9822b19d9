"""Volume and freshness (`sae_pipeline.volume`) on real Parquet lakes scored by the real pipeline."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from sae_pipeline import alerts, pipeline, storage, tables, updating, volume
from sae_pipeline.config import ConfigError, load_config
from sae_pipeline.drift import validate_report
from sae_pipeline.ledger import LedgerEntry
from tests.conftest import write_lake_config

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SHORT_DAY = "day=2026-11-06"  # a third of its rows lost upstream
DIRTY_DAY = "day=2026-11-07"  # a fifth of its rows invalid
GONE_DAY = "day=2026-11-03"  # never arrived


@pytest.fixture(scope="module")
def scored_lake(tmp_path_factory) -> Path:
    """Seven days of 300 rows, one short, one dirty, one missing; trained on and every partition scored."""
    root = tmp_path_factory.mktemp("volume")
    path = write_lake_config(root, days=7, rows_per_day=300, max_steps=30)
    raw = yaml.safe_load(path.read_text())
    raw["volume"] = {"min_history": 3}
    raw["training"]["partitions"] = ["day=2026-11-01", "day=2026-11-02"]  # the last day's drift is new to it
    raw["lake"]["expected_every"] = "1d"
    path.write_text(yaml.safe_dump(raw))
    lake = root / "lake"
    short = lake / SHORT_DAY / "part-0.parquet"
    pl.read_parquet(short).head(100).write_parquet(short)
    dirty = lake / DIRTY_DAY / "part-0.parquet"
    frame = pl.read_parquet(dirty)
    bad = pl.int_range(pl.len()) % 5 == 0
    frame.with_columns(pl.when(bad).then(-1.0).otherwise(pl.col("cpu_pct")).alias("cpu_pct")).write_parquet(dirty)
    shutil.rmtree(lake / GONE_DAY)
    config = load_config(path)
    version = updating.train_or_update(config, tables.partition_records(config.lake)).model_version
    results = [
        pipeline.score_partition(config, record, version, "run", T0) for record in tables.partition_records(config.lake)
    ]
    return path, results


def test_rows_and_quarantine_are_judged_against_earlier_partitions(scored_lake):
    config = load_config(scored_lake[0])
    names = [record.name for record in tables.partition_records(config.lake)]
    verdicts = {verdict.partition: verdict for verdict in volume.check_volume(config, names)}
    assert list(verdicts) == names  # in the lake's order
    early = names[:3]
    assert all(verdicts[name].rows_status == "no_history" and verdicts[name].history < 3 for name in early)
    assert verdicts["day=2026-11-05"].rows_status == "ok" and verdicts["day=2026-11-05"].quarantine_status == "ok"
    short = verdicts[SHORT_DAY]
    assert short.rows_status == "low" and short.rows_in == 100 and short.rows_low > 100 and short.history == 4
    assert short.unusual and "low" in short.describe()
    dirty = verdicts[DIRTY_DAY]
    assert dirty.rows_status == "ok"  # the short day is in its history, but the median is not fooled by it
    assert dirty.quarantine_status == "high" and dirty.quarantined_share >= 0.2 > dirty.quarantine_high


def test_the_verdict_goes_into_report_json(scored_lake):
    config = load_config(scored_lake[0])
    (verdict,) = volume.check_volume(config, [SHORT_DAY])
    uri = volume.add_to_report(config, verdict)
    report = storage.read_json(uri)
    validate_report(report)
    assert report["volume"]["rows_status"] == "low" and report["volume"]["rows_in"] == 100
    assert report["schema_version"] == 1


def test_band_never_narrower_than_the_tolerance():
    entries = [
        LedgerEntry(
            partition=f"day=2026-11-0{i}",
            fingerprint="x",
            model_version="v",
            rows_in=2000,
            rows_quarantined=0,
            rows_scored=2000,
            rows_flagged=0,
            outputs={},
            run_id="r",
            reason="new",
            committed_at=T0,
        )
        for i in range(1, 8)
    ]
    settings = load_config_settings()
    assert volume.judge_volume("d", 1900, 0, entries, settings).rows_status == "ok"  # 5% off, MAD 0
    assert volume.judge_volume("d", 1700, 0, entries, settings).rows_status == "low"
    assert volume.judge_volume("d", 2300, 0, entries, settings).rows_status == "high"
    assert volume.judge_volume("d", 2000, 15, entries, settings).quarantine_status == "ok"  # under 1 point
    assert volume.judge_volume("d", 2000, 30, entries, settings).quarantine_status == "high"


def load_config_settings():
    from sae_pipeline.config import VolumeConfig

    return VolumeConfig()


def test_missing_and_late_partitions(scored_lake):
    config = load_config(scored_lake[0])
    names = [record.name for record in tables.partition_records(config.lake)]
    on_time = volume.check_freshness(config, names, now=dt.datetime(2026, 11, 8, 23, tzinfo=dt.UTC))
    assert on_time.missing == [GONE_DAY] and on_time.n_missing == 1
    assert on_time.latest == "day=2026-11-07" and not on_time.late
    late = volume.check_freshness(config, names, now=dt.datetime(2026, 11, 9, 0, 30, tzinfo=dt.UTC))
    assert late.late and late.next_expected == "day=2026-11-08"
    assert late.due_by == dt.datetime(2026, 11, 9, tzinfo=dt.UTC)
    assert "late: day=2026-11-08" in late.describe() and "1 missing" in late.describe()


def test_hourly_partitions_name_missing_hours():
    config = load_config_for_keys({"day": "date", "hour": "int"}, "1h")
    names = ["day=2026-11-01/hour=22", "day=2026-11-01/hour=23", "day=2026-11-02/hour=1"]
    verdict = volume.check_freshness(config, names, now=dt.datetime(2026, 11, 2, 2, tzinfo=dt.UTC))
    assert verdict.missing == ["2026-11-02T00:00"] and not verdict.late


def load_config_for_keys(keys: dict, every: str):
    from sae_pipeline.config import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "lake": {"uri": "/tmp/lake", "partition_keys": keys, "expected_every": every},
            "columns": [{"name": "x", "type": "float", "role": "numeric"}],
            "output": {"uri": "/tmp/out"},
        }
    )


def test_expected_every_is_checked_at_load(tmp_path):
    path = tmp_path / "c.yaml"
    base = {"columns": [{"name": "x", "type": "float", "role": "numeric"}], "output": {"uri": "out"}}
    path.write_text(yaml.safe_dump({**base, "lake": {"uri": "lake", "expected_every": "daily"}}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).count("\n") == 0
    assert "lake.expected_every" in str(error.value) and "1h" in str(error.value)
    keys = {"region": "string"}
    path.write_text(yaml.safe_dump({**base, "lake": {"uri": "lake", "partition_keys": keys, "expected_every": "1d"}}))
    with pytest.raises(ConfigError, match="type date"):
        load_config(path)


def test_partition_events_announce_drift_volume_and_flagged_rate(scored_lake):
    path, results = scored_lake
    config = load_config(path)
    verdicts = volume.check_volume(config, [result.partition for result in results])
    events = alerts.partition_events(config, results, None, verdicts, run_id="r1")
    scored = [event for event in events if event.event == alerts.SCORED]
    assert [event.resource_id for event in scored] == [
        f"sae-pipeline.partition.{config.output.uri}/{result.partition}" for result in results
    ]
    short = next(event.payload for event in scored if event.payload["partition"] == SHORT_DAY)
    assert short["rows_in"] == 100 and short["volume"]["rows_status"] == "low" and short["run_id"] == "r1"
    unusual = {event.payload["partition"] for event in events if event.event == alerts.VOLUME_UNUSUAL}
    assert unusual == {SHORT_DAY, DIRTY_DAY}
    drifted = [event.payload for event in events if event.event == alerts.DRIFT_DETECTED]
    reports = {
        result.partition: storage.read_json(result.drift_report_uri[: -len("html")] + "json") for result in results
    }
    assert [payload["partition"] for payload in drifted] == [name for name, r in reports.items() if r["dataset_drift"]]
    assert drifted and all(payload["drifted_columns"] for payload in drifted)
    strict = config.model_copy(
        update={
            "drift": config.drift.model_copy(
                update={"policy": config.drift.policy.model_copy(update={"anomaly_rate_factor": 1.01})}
            )
        }
    )
    exceeded = [
        e.payload for e in alerts.partition_events(strict, results, None) if e.event == alerts.FLAGGED_RATE_EXCEEDED
    ]
    rates = {result.partition: result.rows_flagged / result.rows_scored for result in results}
    assert {payload["partition"] for payload in exceeded} == {
        name for name, rate in rates.items() if rate > 1.01 * 0.01
    }
    assert exceeded


def test_freshness_events(scored_lake):
    config = load_config(scored_lake[0])
    names = [record.name for record in tables.partition_records(config.lake)]
    verdict = volume.check_freshness(config, names, now=dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    missing, late = alerts.freshness_events(config, verdict)
    assert missing.event == alerts.PARTITION_MISSING and missing.payload["missing"] == [GONE_DAY]
    assert late.event == alerts.PARTITION_LATE and late.payload["next_expected"] == "day=2026-11-08"
    assert missing.resource_id == f"sae-pipeline.lake.{config.output.uri}"


def test_failed_partitions_are_announced_on_one_line(scored_lake):
    from sae_pipeline.records import FailedPartition

    config = load_config(scored_lake[0])
    long = "day=2026-11-09: 300 of 300 rows quarantined\n" + "x" * 1000
    (event,) = alerts.failure_events(config, [FailedPartition(partition="day=2026-11-09", error=long)], "r2")
    assert event.event == alerts.PARTITION_FAILED and event.payload["partition"] == "day=2026-11-09"
    assert "\n" not in event.payload["error"] and len(event.payload["error"]) == alerts.MAX_ERROR_CHARS


def test_the_shipped_automations_render_these_events(scored_lake):
    """Each automation file's subject and body render (with the Prefect server's own template renderer) on the real
    events it expects: what the webhook, Slack or e-mail would receive."""
    from prefect.events import Event
    from prefect.server.utilities.user_templates import render_user_template_sync

    from flows.alerts import load_automations
    from sae_pipeline.records import FailedPartition

    path, results = scored_lake
    config = load_config(path)
    names = [record.name for record in tables.partition_records(config.lake)]
    records = alerts.partition_events(config, results, None, volume.check_volume(config, names), "r1")
    records += alerts.freshness_events(config, volume.check_freshness(config, names))
    records += alerts.failure_events(config, [FailedPartition(partition="day=2026-11-09", error="unreadable")])
    records += [alerts.champion_moved_event(config, "v1", "v2", "rolled-back")]
    policy = config.drift.policy.model_copy(update={"anomaly_rate_factor": 1.01})
    strict = config.model_copy(update={"drift": config.drift.model_copy(update={"policy": policy})})
    records += [e for e in alerts.partition_events(strict, results, None) if e.event == alerts.FLAGGED_RATE_EXCEEDED]
    rendered = {}
    for automation in load_automations():
        expected = set(automation["trigger"]["expect"])
        for record in records:
            if record.event not in expected:
                continue
            resource = {"prefect.resource.id": record.resource_id, "prefect.resource.name": record.resource_name}
            event = Event(event=record.event, resource=resource, payload=record.payload)
            for action in automation["actions"]:
                text = render_user_template_sync(action["subject"] + "\n" + action["body"], {"event": event})
                assert "Traceback" not in text and "{{" not in text
                rendered.setdefault(record.event, []).append(text)
    assert set(rendered) >= {
        alerts.DRIFT_DETECTED,
        alerts.VOLUME_UNUSUAL,
        alerts.PARTITION_MISSING,
        alerts.PARTITION_LATE,
        alerts.PARTITION_FAILED,
        alerts.MODEL_ROLLED_BACK,
        alerts.FLAGGED_RATE_EXCEEDED,
    }
    assert any("is above 1.01 x the target 1.0% in day=" in text for text in rendered[alerts.FLAGGED_RATE_EXCEEDED])
    assert any(
        "most drifted:" in text and "% of the columns drifted" in text for text in rendered[alerts.DRIFT_DETECTED]
    )
    assert any(f"{SHORT_DAY}: 100 rows read (low" in text for text in rendered[alerts.VOLUME_UNUSUAL])
    assert any(f"missing: {GONE_DAY}" in text for text in rendered[alerts.PARTITION_MISSING])
    assert "day=2026-11-09 failed (the next run retries it): unreadable" in rendered[alerts.PARTITION_FAILED][0]
    assert "champion v1 -> v2 (rolled-back)" in rendered[alerts.MODEL_ROLLED_BACK][0]


def test_report_pages_and_trend_page_show_volume_and_freshness(scored_lake, tmp_path):
    """What `check-volume` and `write-drift-trend` leave on disk: the short day's report.html and report.md say its
    volume is low (rendered again from report.json), and the trend page shows its rows read, its verdict, the
    missing day in its place and that the lake is late; both pages open in Chromium without a console message."""
    from tests.test_drift_browser import CHROMIUM, open_in_chromium

    config = load_config(scored_lake[0])
    names = [record.name for record in tables.partition_records(config.lake)]
    for verdict in volume.check_volume(config, names):
        volume.add_to_report(config, verdict)
    freshness = volume.check_freshness(config, names, now=dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    trend_uri = pipeline.write_drift_trend(config, freshness)

    folder = Path(config.output.drift_uri) / SHORT_DAY
    report = storage.read_json(str(folder / "report.json"))
    html = (folder / "report.html").read_text()
    assert report["volume"]["rows_status"] == "low"
    assert "Unusual volume: 100 rows read (low; usual" in html and '<section id="volume">' in html
    assert "**Unusual volume**: 100 rows read (low" in (folder / "report.md").read_text()
    dirty = (Path(config.output.drift_uri) / DIRTY_DAY / "report.html").read_text()
    assert "Unusual volume: 300 rows read (ok; usual" in dirty and "% (high; usual at most" in dirty

    trend = Path(trend_uri).read_text()
    assert "Unusual volume in 2 partition(s) (latest: day=2026-11-07). 1 partition(s) missing." in trend
    assert "Late: day=2026-11-08 was due by 2026-11-09 00:00 UTC." in trend
    table = trend[trend.index('<table id="partitions">') :]
    rows = {name: table[table.index(f">{name}<") :].split("</tr>")[0] for name in [*names, GONE_DAY]}
    assert ">100</td>" in rows[SHORT_DAY] and "rows low</span>" in rows[SHORT_DAY]
    assert "quarantine high</span>" in rows[DIRTY_DAY] and "no history</span>" in rows[names[0]]
    assert "missing</span>" in rows[GONE_DAY]
    assert table.index(">day=2026-11-02<") < table.index(f">{GONE_DAY}<") < table.index(">day=2026-11-04<")

    # Without the run's verdict the trend writer judges the ledger's partitions with the same function.
    on_its_own = Path(pipeline.write_drift_trend(config)).read_text()
    assert f"1 period(s) with no partition: {GONE_DAY}." in on_its_own

    if CHROMIUM is None:
        pytest.skip("chromium is not installed: the pages' text was checked, not their rendering")
    dom, console = open_in_chromium(folder / "report.html", tmp_path / "profile")
    assert console == [] and "Unusual volume: 100 rows read (low" in dom
    dom, console = open_in_chromium(Path(trend_uri), tmp_path / "profile")
    assert console == [] and "1 partition(s) missing." in dom and "rows low" in dom
