"""A recognisable fake S3 secret (and key id) never appears in logs, artifacts, reports, run summaries, the ledger,
the model registry or error messages: a whole flow and failing CLI runs (also with `--verbose`) against moto, with
failures in pyarrow's reads and in the boto3 partition uploads. botocore's own DEBUG records name the key id
unless `s3_uploads` redacts them: the flow test catches that."""

from __future__ import annotations

import asyncio
import logging
import re

import boto3
import pytest
import yaml

from flows.lake_pipeline import PartitionFailures, lake_pipeline
from sae_pipeline import storage
from sae_pipeline.runs import RunSummary
from tests.conftest import moto_s3, run_cli, write_s3_lake_config
from tests.reliability.fault_proxy import Fault, FaultProxy

SECRET = "FAKE-SECRET-do-not-log-7f3a9"
KEY_ID = "FAKEKEYID-do-not-log-51c2e"
BUCKET = "lake"


def _leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [token for token in (SECRET, KEY_ID) if token in text]


@pytest.fixture
def moto():
    with moto_s3(BUCKET, KEY_ID, SECRET) as endpoint:
        yield endpoint.removeprefix("http://")


def _config(tmp_path, days: int = 2) -> str:
    return str(write_s3_lake_config(tmp_path, BUCKET, days=days)[0])


def _every_object() -> dict[str, bytes]:
    """Every object the pipeline wrote: run summaries, drift report.json/html/md, ledger, model.json, aliases.json..."""
    client = boto3.client("s3")
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="out/")
        for item in page.get("Contents", [])
    ]
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


async def _artifacts_and_stored_logs() -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [item.model_dump_json() for item in [*await client.read_artifacts(), *await client.read_logs()]]


@pytest.mark.usefixtures("prefect_harness")
def test_flow_logs_artifacts_and_outputs_hold_no_secret(moto, tmp_path, monkeypatch, caplog):
    config_path = _config(tmp_path)
    caplog.set_level(logging.DEBUG)
    summary = RunSummary.model_validate(lake_pipeline(config_path))
    assert summary.totals["rows_scored"] + summary.totals["rows_quarantined"] == 600
    # And a failing run: the store refuses to write the scored table (error messages carry the store's reply).
    assert storage.delete_file(f"s3://{BUCKET}/out/ledger/day=2026-11-01.json")
    with FaultProxy(moto, [Fault(403, "PUT", rf"^/{BUCKET}/out/scored/", times=None)]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(PartitionFailures) as failed:
            lake_pipeline(config_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{moto}")
    assert not _leaks(str(failed.value)) and not _leaks(repr(failed.value.summary))
    # Every log record of both runs, DEBUG included (before this test's own boto3 calls, whose DEBUG logs sign
    # requests).
    leaking = {(record.name, record.getMessage()[:300]) for record in caplog.records if _leaks(record.getMessage())}
    assert leaking == set() and not _leaks(caplog.text)

    objects = _every_object()
    for suffix in ("report.json", "report.html", "report.md", "model.json", "aliases.json"):
        assert any(key.endswith(suffix) for key in objects), (suffix, sorted(objects))
    assert any("/ledger/" in key for key in objects) and any("/runs/" in key for key in objects), sorted(objects)
    assert {key: _leaks(data) for key, data in objects.items() if _leaks(data)} == {}

    stored = asyncio.run(_artifacts_and_stored_logs())
    assert stored and not [text for text in stored if _leaks(text)]


def test_failing_cli_runs_print_no_secret(moto, tmp_path):
    config_path = _config(tmp_path, days=1)
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    with FaultProxy(moto, [Fault(403, times=None)]) as proxy:  # everything forbidden: fails on the first read
        for verbose in ((), ("--verbose",)):
            result = run_cli(
                "run",
                "--config",
                config_path,
                "--no-progress",
                *verbose,
                timeout=120,
                AWS_ENDPOINT_URL=proxy.endpoint,
                **env,
            )
            assert result.returncode != 0, result.stdout + result.stderr
            assert "error:" in result.stderr and re.search(
                r"ACCESS_DENIED|Access Denied|AccessDenied", result.stderr
            ), result.stderr
            assert not _leaks(result.stdout) and not _leaks(result.stderr), (result.stdout + result.stderr)[-3000:]


def test_cli_run_from_a_config_on_s3_failing_to_upload_prints_no_secret(moto, tmp_path):
    """The failure happens in the boto3 upload of a scored partition (the store refuses it), with `--verbose`."""
    _, raw = write_s3_lake_config(tmp_path, BUCKET, days=1)
    config_uri = f"s3://{BUCKET}/conf/pipeline.yaml"
    storage.write_text(config_uri, yaml.safe_dump(raw))
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    with FaultProxy(moto, [Fault(403, "PUT", rf"^/{BUCKET}/out/scored/", times=None)]) as proxy:
        result = run_cli(
            "run",
            "--config",
            config_uri,
            "--no-progress",
            "--verbose",
            timeout=180,
            AWS_ENDPOINT_URL=proxy.endpoint,
            **env,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "AccessDenied" in result.stderr and "key 'out/scored/day=" in result.stderr, (
        output[-3000:]
    )
    assert not _leaks(output), output[-3000:]
    summaries = {key: data for key, data in _every_object().items() if "/runs/" in key}
    assert summaries and {key: _leaks(data) for key, data in summaries.items() if _leaks(data)} == {}
