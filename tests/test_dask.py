"""Scale-out: per-partition scoring on a real Dask cluster gives the same outputs as the run's own thread pool."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from distributed import Client, LocalCluster, get_task_stream

from flows.lake_pipeline import lake_pipeline, scoring_task_runner
from sae_pipeline.config import load_config
from sae_pipeline.ledger import Ledger
from sae_pipeline.registry import ModelRegistry
from tests.conftest import write_lake_config

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 4
#: Columns that say when and by which run a row was scored, not what its score is.
RUN_SPECIFIC = ["scored_at"]


@pytest.fixture(scope="module")
def dask_client():
    """Two worker processes, one task at a time each, as a real cluster's workers would be."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:  # else prefect-dask would reuse it everywhere
            yield client


def _with_scoring(path: Path, name: str, output: Path, **scoring) -> Path:
    """A copy of the config at `path` that writes to `output` and scores with these `scoring` settings."""
    raw = yaml.safe_load(path.read_text())
    raw["output"]["uri"] = str(output)
    raw["scoring"] = {**raw.get("scoring", {}), **scoring}
    copy = path.with_name(name)
    copy.write_text(yaml.safe_dump(raw))
    return copy


def _table(uri: str) -> pl.DataFrame:
    """A whole output table without its run-specific columns, in an order that does not depend on the writer."""
    frame = pl.scan_parquet(uri, hive_partitioning=True, hive_schema={"day": pl.Date}).collect().drop(RUN_SPECIFIC, strict=False)
    return frame.sort([name for name, dtype in frame.schema.items() if not isinstance(dtype, pl.List)])


def test_dask_scoring_matches_the_sequential_run(tmp_path, dask_client):
    sequential = write_lake_config(tmp_path, days=DAYS, rows_per_day=600)
    trained = lake_pipeline(str(sequential), mode="train")
    version = trained["training"]["model_version"]
    on_dask = _with_scoring(
        sequential, "dask.yaml", tmp_path / "out-dask", task_runner="dask", dask_address=dask_client.scheduler.address
    )
    ModelRegistry(load_config(on_dask).output.models_uri).save(ModelRegistry(load_config(sequential).output.models_uri).load(version))

    expected = lake_pipeline(str(sequential), mode="score")
    with get_task_stream(client=dask_client) as stream:
        actual = lake_pipeline(str(on_dask), mode="score", model=version)

    ran_on = {record["worker"] for record in stream.data if "score" in record["key"]}
    assert len([record for record in stream.data if "score" in record["key"]]) == DAYS
    assert ran_on == set(dask_client.scheduler_info()["workers"])  # both worker processes scored partitions

    reference, scaled = load_config(sequential).output, load_config(on_dask).output
    assert _table(scaled.scored_uri).equals(_table(reference.scored_uri))
    assert _table(scaled.quarantine_uri).equals(_table(reference.quarantine_uri))
    assert actual["totals"] == expected["totals"] and actual["totals"]["rows_quarantined"] > 0
    ledger = Ledger(scaled.ledger_uri).entries()
    assert sorted(ledger) == sorted(p["partition"] for p in expected["partitions"]) and len(ledger) == DAYS
    assert {entry.run_id for entry in ledger.values()} == {actual["run_id"]}
    assert not list(Path(scaled.staging_uri).glob("*"))


def test_without_an_address_a_local_cluster_of_dask_workers_lives_for_the_run(tmp_path):
    config = load_config(_with_scoring(write_lake_config(tmp_path, days=1), "local.yaml", tmp_path / "out", task_runner="dask", dask_workers=1))
    with scoring_task_runner(config) as runner:
        cluster = runner.client.cluster
        assert len(cluster.workers) == 1
    assert cluster.status.name == "closed"
