"""Shared fixtures: small generated lakes with configs, and one Prefect test harness per session."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from flows.embedded_server import DEFAULT_START_TIMEOUT_S, TIMEOUT_SETTING
from sae_pipeline.parquet_io import PARTITION_FILE
from sae_pipeline.sample_data import generate_sample_lake

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Every Prefect server the tests start in-process (the session harness, and one a client call starts outside it, as
# rendering a work-pool job template does) gets the CLI's start allowance instead of Prefect's 20-30 s, which ran out
# while the other test worker's end-to-end runs took both cores.
os.environ.setdefault(TIMEOUT_SETTING, str(DEFAULT_START_TIMEOUT_S))
# One compute thread per test worker (pytest-xdist starts one worker per core): with torch's and faiss's OpenMP pools
# sized to every core in every worker, the workers' threads fought over the cores (tests/test_detector.py with
# tests/test_recurring_runs.py on 2 workers: 177 s, against 127 s so). Read when torch loads; subprocesses inherit it.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "sample_data" / "telemetry.yaml"


def benchmark_module(name: str):
    """Import `benchmarks/<name>.py` (not a package: scripts a user runs) as `<name>_benchmark`."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_lake_config(root: Path, days: int = 3, rows_per_day: int = 600, context: dict | None = None, **model) -> Path:
    """Generate a small telemetry lake under `root` and a config for it (fast model settings by default), with
    `context` as the config's context section if given."""
    generate_sample_lake(root / "lake", days=days, rows_per_day=rows_per_day, drift_days=1)
    config = yaml.safe_load(SAMPLE_CONFIG.read_text())
    config["lake"]["uri"] = str(root / "lake")
    config["output"]["uri"] = str(root / "out")
    config["training"] = {"partitions": None, "max_rows": 200_000}
    config["model"] = {"max_steps": 300, "seed": 0, **model}
    if context is not None:
        config["context"] = context
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_file(folder: Path, frame: pl.DataFrame, name: str = PARTITION_FILE) -> Path:
    """Write `frame` as one Parquet file in `folder` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(frame.to_arrow(), path)
    return path


def small_frame(start: int, n: int = 5) -> pl.DataFrame:
    """`n` rows with consecutive ids from `start` and evenly spaced values."""
    return pl.DataFrame({"id": np.arange(start, start + n, dtype=np.int64), "value": np.linspace(0.0, 1.0, n)})


#: One Prefect home for every command-line run of the session: the embedded server's database is created and
#: migrated once (a first start costs about 10 s more than a later one).
CLI_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="sae-tests-prefect-"))

_shared_server = None


def shared_api_url() -> str:
    """The API of one Prefect server that this test process's command-line runs share, started on first use and
    stopped at exit: a run that starts its own embedded server spends about 6 s on it. It is the server the CLI
    embeds (`flows.embedded_server`), with this session's Prefect home; this process's environment is left as is."""
    global _shared_server
    if _shared_server is None:
        from unittest import mock

        from flows.embedded_server import EmbeddedServer

        server = EmbeddedServer(verbose=False)
        with mock.patch.dict(os.environ, cli_env(embedded=True), clear=True):  # launch() sets PREFECT_API_URL
            server.launch()
            server.wait_until_ready(120, on_retry=lambda message: None)
        _shared_server = server
    return _shared_server.api_url


def cli_env(embedded: bool = False, **extra: str) -> dict:
    """The environment of a `sae-pipeline` subprocess: this session's Prefect home, and the shared server as its
    API; with `embedded`, no configured API, so the command starts its own server as on a user's machine."""
    env = {**os.environ, "PREFECT_HOME": str(CLI_PREFECT_HOME), **extra}
    env.pop("PREFECT_API_URL", None)
    if not embedded:
        env["PREFECT_API_URL"] = shared_api_url()
    return env


def run_cli(*args: str, timeout: float = 300, embedded: bool = False, **extra: str) -> subprocess.CompletedProcess:
    """Run `sae-pipeline ARGS` to completion and return its exit status and output (`embedded`: see `cli_env`)."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(embedded, **extra),
        timeout=timeout,
    )


def start_cli(*args: str, embedded: bool = False, **extra: str) -> subprocess.Popen:
    """Start `sae-pipeline ARGS` without waiting for it (`embedded`: see `cli_env`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(embedded, **extra),
    )


@contextlib.contextmanager
def moto_s3(bucket: str, key_id: str = "testing", secret: str = "testing") -> Iterator[str]:
    """A real S3 API (moto's server on 127.0.0.1) with an empty store and one bucket, the AWS environment pointing
    at it; yields the endpoint URL. moto keeps its buckets per process, across server instances: hence the reset."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ACCESS_KEY_ID", key_id)
            patch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            patch.setenv("AWS_ENDPOINT_URL", endpoint)
            boto3.client("s3").create_bucket(Bucket=bucket)
            yield endpoint
    finally:
        server.stop()


def write_s3_lake_config(
    root: Path, bucket: str, days: int = 2, rows_per_day: int = 300, max_steps: int = 60
) -> tuple[Path, dict]:
    """Generate a small lake, upload it to `s3://bucket/raw` (endpoint and credentials from the environment: a moto
    server on 127.0.0.1 in tests) and write a config whose outputs go to `s3://bucket/out`; return (path, raw)."""
    import pyarrow.fs as pafs

    from sae_pipeline import storage

    generate_sample_lake(root / "local", days=days, rows_per_day=rows_per_day)
    s3, _ = storage.filesystem_for(f"s3://{bucket}/raw")
    pafs.copy_files(str(root / "local"), f"{bucket}/raw", destination_filesystem=s3)
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text())
    raw.update(
        lake={"uri": f"s3://{bucket}/raw", "partition_keys": {"day": "date"}},
        output={"uri": f"s3://{bucket}/out"},
        training={"partitions": None, "max_rows": 10_000},
        model={"max_steps": max_steps},
    )
    path = root / "s3.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


@pytest.fixture
def lake_config(tmp_path: Path) -> Path:
    return write_lake_config(tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files marked `slow` come first, so that with `make test` (`--dist loadfile --no-loadscope-reorder`) no
    worker starts a two-minute file while the other has nothing left to run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect API for the whole session (about 6 s once; it may take as long as `TIMEOUT_SETTING`
    allows, set above)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # None: Prefect reads TIMEOUT_SETTING
        yield


def add_outage_rows(lake: Path, host: str, times: list, **values) -> None:
    """Append rows of `host` at `times` to the day partitions they fall on: copies of a normal row with a latency and
    error rate far outside normal, labelled anomalous, and any other column `values` (an incident to find)."""
    for day in sorted({time.date() for time in times}):
        path = lake / f"day={day}" / "part-0.parquet"
        frame = pl.read_parquet(path)
        template = frame.filter(pl.col("label_is_anomaly").not_()).head(1)
        stamps = [time for time in times if time.date() == day]
        rows = pl.concat([template] * len(stamps)).with_columns(
            pl.Series("event_time", stamps, dtype=pl.Datetime("us")),
            pl.lit(host).alias("host_id"),
            pl.lit(60_000.0).alias("latency_ms"),
            pl.lit(0.95).alias("error_rate"),
            pl.lit(True).alias("label_is_anomaly"),
            *(pl.lit(value).alias(name) for name, value in values.items()),
        )
        pl.concat([frame, rows]).sort("event_time").write_parquet(path)
