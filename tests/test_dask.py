"""Scale-out: per-partition scoring on a real Dask cluster gives the same outputs as the run's own thread pool."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from distributed import Client, LocalCluster, get_task_stream

from flows.lake_pipeline import lake_pipeline, scoring_task_runner
from sae_pipeline import hive, pipeline
from sae_pipeline.config import load_config
from sae_pipeline.lease import LeaseLostError, RunLease
from sae_pipeline.ledger import Ledger
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.runs import RunSummary
from tests.conftest import write_lake_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DAYS = 4
CONTEXT = {"entity": "host_id", "min_group_rows": 5, "calendar": ["hour_of_day"], "history": {"window": 4}}
#: Columns that say when a row was scored, not what its score is.
RUN_SPECIFIC = ["scored_at"]


@pytest.fixture(scope="module")
def dask_client():
    """Two worker processes, one task at a time each, as a real cluster's workers would be."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:  # else prefect-dask would reuse it everywhere
            yield client


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prefect_harness) -> tuple[Path, str, RunSummary]:
    """A lake scored in the run's own thread pool: (config path, model version, run summary). With a context whose
    history crosses partition boundaries: on workers, each partition reads its predecessor's end itself."""
    config = write_lake_config(tmp_path_factory.mktemp("reference"), days=DAYS, rows_per_day=600, context=CONTEXT)
    version = lake_pipeline(str(config), mode="train").training.model_version
    return config, version, lake_pipeline(str(config), mode="score")


def _variant(reference_config: Path, version: str, folder: Path, **scoring) -> Path:
    """A copy of the reference config that writes to `folder/out`, with the reference model and these `scoring`
    settings."""
    raw = yaml.safe_load(reference_config.read_text())
    raw["output"]["uri"] = str(folder / "out")
    raw["scoring"] = {**raw.get("scoring", {}), **scoring}
    path = folder / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    model = ModelRegistry(load_config(reference_config).output.models_uri).load(version)
    ModelRegistry(load_config(path).output.models_uri).save(model)
    return path


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows without their run-specific columns, in an order that does not depend on the writer."""
    frame = frame.drop(RUN_SPECIFIC, strict=False)
    return frame.sort([name for name, dtype in frame.schema.items() if not isinstance(dtype, pl.List)])


def _table(uri: str) -> pl.DataFrame:
    return _comparable(pl.scan_parquet(uri, hive_partitioning=True, hive_schema={"day": pl.Date}).collect())


def test_dask_scoring_matches_the_thread_pool_run(reference, dask_client, tmp_path):
    sequential, version, expected = reference
    on_dask = _variant(sequential, version, tmp_path, task_runner="dask", dask_address=dask_client.scheduler.address)

    with get_task_stream(client=dask_client) as stream:
        actual = lake_pipeline(str(on_dask), mode="score", model=version)

    scoring_tasks = [record for record in stream.data if "score" in record["key"]]
    assert len(scoring_tasks) == DAYS
    assert {record["worker"] for record in scoring_tasks} == set(dask_client.scheduler_info()["workers"])
    baseline, scaled = load_config(sequential).output, load_config(on_dask).output
    assert _table(scaled.scored_uri).equals(_table(baseline.scored_uri))
    assert _table(scaled.quarantine_uri).equals(_table(baseline.quarantine_uri))
    assert actual.totals == expected.totals and actual.totals["rows_quarantined"] > 0
    ledger = Ledger(scaled.ledger_uri).entries()
    assert sorted(ledger) == sorted(p.partition for p in expected.partitions) and len(ledger) == DAYS
    assert {entry.run_id for entry in ledger.values()} == {actual.run_id}
    assert not list(Path(scaled.staging_uri).glob("*"))


def test_a_partition_scored_on_both_workers_at_once_is_committed_once(reference, dask_client, tmp_path):
    """A retry on another worker while the first attempt still runs (a worker thought lost) leaves one clean copy."""
    sequential, version, _ = reference
    config = load_config(_variant(sequential, version, tmp_path))
    partition = hive.partition_records(config.lake)[0]
    attempts = [
        dask_client.submit(
            pipeline.score_partition,
            config,
            partition,
            version,
            "retried",
            dt.datetime.now(dt.UTC),
            workers=[worker],
            pure=False,
        )
        for worker in dask_client.scheduler_info()["workers"]
    ]
    records = dask_client.gather(attempts)

    assert records[0].rows_scored == records[1].rows_scored > 0
    scored = Path(config.output.scored_uri) / partition.name
    assert len(list(scored.iterdir())) == 1
    expected = Path(load_config(sequential).output.scored_uri) / partition.name
    assert _comparable(pl.read_parquet(scored)).equals(_comparable(pl.read_parquet(expected)))
    assert list(Ledger(config.output.ledger_uri).entries()) == [partition.name]
    assert not list(Path(config.output.staging_uri).glob("*"))


def _crash_mid_partition(staging: str, marker: str, dask_worker) -> None:
    """Watch this worker from a thread, and end its process at once (as a kill or an out-of-memory would) the first
    time it is executing a task while a partition is being staged. The marker makes it one crash per cluster."""

    def watch() -> None:
        while not (dask_worker.state.executing_count and any(Path(staging).glob("*.parquet"))):
            time.sleep(0.001)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:  # another worker crashed first
            return
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def test_a_worker_that_dies_mid_partition_is_replaced_and_the_run_equals_the_sequential_one(reference, tmp_path):
    """The partition whose worker died is scored again on another worker; nothing of the dead attempt is visible."""
    sequential, version, expected = reference
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            config_path = _variant(
                sequential, version, tmp_path, task_runner="dask", dask_address=cluster.scheduler_address, batch_rows=20
            )
            scaled = load_config(config_path).output
            marker = tmp_path / "crashed"
            client.run(_crash_mid_partition, scaled.staging_uri, str(marker))

            actual = lake_pipeline(str(config_path), mode="score", model=version)

            assert marker.exists()  # a worker did die in the middle of a partition
            assert _table(scaled.scored_uri).equals(_table(load_config(sequential).output.scored_uri))
            assert actual.totals == expected.totals
            assert len(Ledger(scaled.ledger_uri).entries()) == DAYS
            rerun = lake_pipeline(str(config_path), mode="score", model=version)
    assert rerun.totals["rows_scored"] == 0
    assert not list(Path(scaled.staging_uri).glob("*"))  # the dead attempt's staged file is cleared by the next run


def test_a_task_that_outlived_its_run_commits_nothing(reference, dask_client, tmp_path):
    """A flow process died; its task went on on a worker while a new run took the output folder over. The task must
    not publish over the new run's outputs: it fails at its commit and leaves nothing behind."""
    sequential, version, _ = reference
    config = load_config(_variant(sequential, version, tmp_path))
    partition = hive.partition_records(config.lake)[0]
    dead_run = RunLease(config.output.lease_uri, "dead", ttl_seconds=60)  # never acquired: its holder is gone
    with RunLease(config.output.lease_uri, "new", ttl_seconds=60):
        late = dask_client.submit(
            pipeline.score_partition,
            config,
            partition,
            version,
            "dead",
            dt.datetime.now(dt.UTC),
            lease_token=dead_run.token,
            pure=False,
        )
        lost = rf"{partition.name}: quarantined and scored rows not committed.*run new holds it"
        with pytest.raises(LeaseLostError, match=lost):
            late.result()
    assert not Path(config.output.scored_uri).exists() and not Path(config.output.quarantine_uri).exists()
    assert not Ledger(config.output.ledger_uri).entries()
    assert not list(Path(config.output.staging_uri).glob("*"))


def test_without_an_address_a_local_cluster_of_dask_workers_lives_for_the_run(tmp_path):
    config = load_config(write_lake_config(tmp_path, days=1))
    config = config.model_copy(
        update={"scoring": config.scoring.model_copy(update={"task_runner": "dask", "dask_workers": 1})}
    )
    with scoring_task_runner(config) as runner:
        cluster = runner.client.cluster
        assert len(cluster.workers) == 1
    assert cluster.status.name == "closed"


def test_a_dask_client_already_open_for_another_scheduler_is_refused(dask_client, tmp_path):
    config = load_config(write_lake_config(tmp_path, days=1))
    elsewhere = config.scoring.model_copy(update={"task_runner": "dask", "dask_address": "tcp://127.0.0.1:9"})
    with Client(dask_client.scheduler.address):  # the process's default client, as a notebook would have
        for scoring in (elsewhere, elsewhere.model_copy(update={"dask_address": None})):
            with pytest.raises(ValueError, match="already has a Dask client for tcp://127.0.0.1"):
                with scoring_task_runner(config.model_copy(update={"scoring": scoring})):
                    pass
        same = elsewhere.model_copy(update={"dask_address": dask_client.scheduler.address})
        with scoring_task_runner(config.model_copy(update={"scoring": same})) as runner:
            assert runner.client.scheduler.address == dask_client.scheduler.address
