"""The flows: train-or-update, score, and the combined run that the CLI and the demo use.

Each run holds a lease on the output folder (two runs never interleave), discovers the partitions with their
fingerprints, trains or updates the model only when there is something new, scores only the partitions that the
ledger says are new, changed or requested (one read and one write per partition), removes the outputs of
partitions that left the lake, and writes a run summary. Tasks exchange only config paths and small records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import distributed
from distributed.comm import resolve_address
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import ParameterTypeError
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner
from pydantic import Field

from flows.handoff import (
    TRAINING_DEPLOYMENT,
    DriftPolicyAction,
    NoChampionPolicy,
    ensure_champion,
    start_drift_training,
)
from sae_pipeline import pipeline, storage, updating
from sae_pipeline.config import PipelineConfig, load_config
from sae_pipeline.storage import read_bytes
from sae_pipeline.lease import RunLease
from sae_pipeline.runs import build_run_summary, format_summary

RunKind = Literal["run", "train", "score"]
#: Parameter types that a Prefect server checks when a run is created, so a deployment refuses a bad value at once.
ConfigUri = Annotated[str, Field(min_length=1, description="pipeline YAML: a path (relative to the project) or s3:// URI")]
PartitionSelection = Annotated[
    str,
    Field(
        pattern=r"^\s*[^,=\s][^,=]*=[^,]*(,\s*[^,=\s][^,=]*=[^,]*)*$",
        description="partition names and ranges FIRST..LAST, e.g. day=2026-11-01..day=2026-11-07",
    ),
]
ModelRef = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128, description="model version, prefix or alias")
]

def _retry_transient(task, task_run, state) -> bool:
    """Retry only storage hiccups (`storage.is_transient`), never bad data, config or model, nor full or read-only
    storage."""
    try:
        state.result()
    except Exception as error:
        return storage.is_transient(error)
    return False


io_task = task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient)


@io_task(name="discover-partitions")
def discover_partitions(config_path: str) -> list[dict]:
    """Return a record (name, URI, fingerprint) per partition of the input table."""
    return pipeline.list_partitions(load_config(config_path))


@task(name="train-or-update")
def train_or_update(
    config_path: str, partitions: list[dict], retrain: bool, progress: bool, drifted: list[str] | None = None
) -> dict:
    """Train, fine-tune the champion, or skip when nothing changed; return the decision record."""
    return updating.train_or_update(
        load_config(config_path), partitions, retrain=retrain, progress=progress, drifted=drifted or []
    )


@io_task(name="plan-scoring")
def plan_scoring(
    config_path: str, partitions: list[dict], model_version: str, requested: list[str] | None, backfill: bool, rescore: bool
) -> dict:
    """Compare the lake with the ledger: what to score and why, what is up to date, what was removed."""
    return pipeline.plan_run(load_config(config_path), partitions, model_version, requested, backfill, rescore)


@io_task(name="score-partition", task_run_name="score {partition[name]}")
def score_partition(
    config_path: str, partition: dict, model_version: str, run_id: str, scored_at: dt.datetime, reason: str, progress: bool,
    lease_token: str,
) -> dict:
    """Validate, score and report one partition, then commit it to the ledger, as long as the run still holds the
    output folder's lease; return the counts and URIs."""
    return pipeline.score_partition(
        load_config(config_path), partition, model_version, run_id, scored_at, reason=reason, progress=progress,
        lease_token=lease_token,
    )


@io_task(name="write-drift-trend")
def write_drift_trend(config_path: str) -> str:
    """Rewrite the lake-level drift trend page from every partition's report."""
    return pipeline.write_drift_trend(load_config(config_path))


@io_task(name="remove-partition", task_run_name="remove {name}")
def remove_partition(config_path: str, name: str) -> None:
    """Delete the outputs and ledger entry of a partition that left the lake."""
    pipeline.remove_partition_outputs(load_config(config_path), name)


class PartitionFailures(RuntimeError):
    """Some partitions failed (the others were committed); `summary` is the run summary that lists them."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def _collect(futures: dict[str, object]) -> tuple[list[dict], list[dict]]:
    """Wait for every partition task; return (results, failures as {partition, error})."""
    wait(list(futures.values()))
    results, failures = [], []
    for name, future in futures.items():
        try:
            outcome = future.result()
        except Exception as error:  # each partition fails alone; the run reports them all
            failures.append({"partition": name, "error": str(error)})
        else:
            if outcome is not None:
                results.append(outcome)
    return results, failures


@contextmanager
def scoring_task_runner(config: PipelineConfig) -> Iterator[TaskRunner]:
    """Where the per-partition scoring tasks run (`scoring.task_runner`): the flow's own thread pool, or a Dask
    cluster (at `scoring.dask_address`, else a local one for this run, one partition per worker process at a time).
    A flow's runner is fixed when it is decorated, so the flow submits to this one (what `Task.submit` does with
    the flow's). Tasks on Dask workers report to this flow run but never touch the run lease: this process holds
    and renews it until every task has finished."""
    scoring = config.scoring
    if scoring.task_runner == "threads":
        yield FlowRunContext.get().task_runner
        return
    _refuse_a_foreign_dask_client(scoring.dask_address)
    local_cluster = {"n_workers": scoring.dask_workers, "threads_per_worker": 1}
    runner = DaskTaskRunner(address=scoring.dask_address) if scoring.dask_address else DaskTaskRunner(cluster_kwargs=local_cluster)
    with runner:
        yield runner


def _refuse_a_foreign_dask_client(configured: str | None) -> None:
    """prefect-dask sends tasks to a Dask client already open in this process (a notebook's, or the worker's when
    this flow runs on Dask) in preference to `scoring.dask_address` or a local cluster: refuse to score silently
    somewhere else than the config says."""
    try:
        open_scheduler = distributed.get_client().scheduler.address
    except ValueError:  # no client open: prefect-dask does what the config says
        return
    if configured and resolve_address(configured) == resolve_address(open_scheduler):
        return
    wanted = f"scoring.dask_address is {configured}" if configured else "scoring.dask_address is not set (a local cluster)"
    raise ValueError(
        f"{wanted}, but this process already has a Dask client for {open_scheduler}, which prefect-dask would use "
        f"instead: close that client, or set scoring.dask_address to {open_scheduler}"
    )


def _publish_artifacts(summary, scored: list[dict]) -> None:
    create_table_artifact(
        key="sae-run-summary",
        table=[partition.model_dump(exclude={"quarantine_uri"}) for partition in summary.partitions]
        or [{"message": summary.message}],
        description=f"Run {summary.run_id}: {summary.message}",
    )
    for record in scored:
        create_markdown_artifact(
            key="drift-" + "".join(c if c.isalnum() else "-" for c in record["partition"].lower()),
            markdown=read_bytes(record["drift_markdown_uri"]).decode(),
            description=f"Drift report for {record['partition']}",
        )


def _run(
    kind: RunKind,
    config_path: str,
    partitions: list[str] | None = None,
    backfill: bool = False,
    rescore_with: str | None = None,
    model: str | None = None,
    retrain: bool = False,
    progress: bool = False,
    drifted: list[str] | None = None,
) -> dict:
    """The body every flow shares; `kind` says whether it trains, scores, or both. `drifted`: partitions a
    scoring run's drift policy asked a training run to learn from."""
    logger = get_run_logger()
    config_path = str(Path(config_path).resolve()) if "://" not in config_path else config_path
    config = load_config(config_path)
    started_at = dt.datetime.now(dt.UTC)
    run_id = str(flow_run.id or started_at.strftime("%Y%m%dT%H%M%S"))

    with RunLease(config.output.lease_uri, run_id, config.run.lease_ttl_seconds) as lease:
        pipeline.clear_staging(config, started_at)
        all_partitions = discover_partitions(config_path)
        lake_partitions, refused = pipeline.split_refused(all_partitions)  # refused keys fail without being read
        logger.info("%d partition(s) under %s", len(lake_partitions), config.lake.uri)
        training = None
        if kind != "score":
            training = train_or_update(config_path, lake_partitions, retrain, progress, drifted)
            logger.info("training: %s (%s)", training["action"], training["reason"])
        scoring_model, plan, scored, failures = None, None, [], list(refused)
        if kind != "train":
            scoring_model = pipeline.scoring_model(config, rescore_with or model)
            plan = plan_scoring(
                config_path, all_partitions, scoring_model["model_version"], partitions, backfill, bool(rescore_with)
            )
            by_name = {record["name"]: record for record in lake_partitions}
            with scoring_task_runner(config) as runner:
                futures = {
                    name: runner.submit(
                        score_partition,
                        dict(
                            config_path=config_path, partition=by_name[name], model_version=scoring_model["model_version"],
                            run_id=run_id, scored_at=started_at, reason=reason, progress=progress,
                            lease_token=lease.token,
                        ),
                    )
                    for name, reason in plan["to_score"].items()
                }
                futures.update({name: remove_partition.submit(config_path, name) for name in plan["removed"]})
                scored, scoring_failures = _collect(futures)
            failures += scoring_failures
            if scored or plan["removed"]:
                write_drift_trend(config_path)
        drift_policy = _act_on_drift(kind, config_path, lake_partitions, scored, progress)
        summary = build_run_summary(
            config, run_id, kind, started_at, training=training, model=scoring_model, plan=plan, scored=scored,
            failed=failures, drift_policy=drift_policy,
        )
    _publish_artifacts(summary, scored)
    logger.info("run summary:\n%s", format_summary(summary))
    if failures:
        raise PartitionFailures(
            f"{len(failures)} partition(s) failed (the others were committed; the next run retries these):\n"
            + "\n".join(f"- {failure['partition']}: {failure['error']}" for failure in failures),
            summary.model_dump(mode="json"),
        )
    return summary.model_dump(mode="json")


def _act_on_drift(kind: RunKind, config_path: str, partitions: list[dict], scored: list[dict], progress: bool) -> dict | None:
    """When the drift policy asks for training: a combined run updates the model on the drifted partitions now;
    a scoring-only run records the request for the next train-or-update run."""
    asking = {record["partition"]: record["drift_policy_reason"] for record in scored if record["drift_wants_training"]}
    if not asking:
        return None
    training = train_or_update(config_path, partitions, False, progress, list(asking)) if kind == "run" else None
    return {"partitions": asking, "training": training}


@flow(name="sae-train-or-update", flow_run_name="train-or-update {config_path}", log_prints=True)
def train_or_update_flow(
    config_path: ConfigUri, retrain: bool = False, progress: bool = False, drifted: list[PartitionSelection] | None = None
) -> dict:
    """Train a model (first run, `retrain`, changed settings) or fine-tune the champion on new data (and on the
    `drifted` partitions a scoring run asked for); else do nothing."""
    return _run("train", config_path, retrain=retrain, progress=progress, drifted=drifted)


@flow(name="sae-score", flow_run_name="score {config_path}", log_prints=True)
def score_flow(
    config_path: ConfigUri,
    partitions: list[PartitionSelection] | None = None,
    backfill: bool = False,
    rescore_with: ModelRef | None = None,
    model: ModelRef | None = None,
    progress: bool = False,
    on_no_champion: NoChampionPolicy = "fail",
    training_deployment: str = TRAINING_DEPLOYMENT,
    training_timeout_s: Annotated[int, Field(ge=0)] = 4 * 3600,
    on_drift: DriftPolicyAction = "record",
) -> dict:
    """Score new, changed or requested partitions with the champion (or `model`); remove outputs of deleted ones.

    With no champion, `on_no_champion` says what to do: fail, `train` (run `training_deployment`, wait up to
    `training_timeout_s`, then score) or `start-training` (run it and fail at once). When the drift policy asks for
    training, `on_drift` either records it in the run summary (`record`) or also starts `training_deployment` on
    the drifted partitions without waiting (`start-training`): these partitions keep the scores of the current
    champion, and the next scoring runs use whatever that training promotes."""
    ensure_champion(config_path, rescore_with or model, on_no_champion, training_deployment, training_timeout_s)
    summary = _run("score", config_path, partitions, backfill, rescore_with, model, progress=progress)
    if on_drift == "start-training" and summary["drift_policy"]:
        summary["drift_handoff"] = start_drift_training(config_path, list(summary["drift_policy"]["partitions"]), training_deployment)
    return summary


@flow(name="sae-lake-pipeline", flow_run_name="{mode} {config_path}", log_prints=True)
def lake_pipeline(
    config_path: ConfigUri,
    mode: RunKind = "run",
    partitions: list[PartitionSelection] | None = None,
    backfill: bool = False,
    rescore_with: ModelRef | None = None,
    model: ModelRef | None = None,
    retrain: bool = False,
    progress: bool = False,
) -> dict:
    """Train-or-update then score (`mode` run), or only one of them; return the run summary."""
    return _run(mode, config_path, partitions, backfill, rescore_with, model, retrain, progress)


def run_in_process(**parameters) -> dict:
    """Run the combined flow in this process (CLI, notebooks) without the heartbeat thread, which adds ~1 s per run
    and only matters for crash detection by a remote API."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        try:
            return lake_pipeline(**parameters)
        except ParameterTypeError as error:  # the CLI reports ValueErrors as one `error:` line
            raise ValueError(str(error)) from None
