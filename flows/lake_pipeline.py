"""The flows: train-or-update, score, and the combined run that the CLI and the demo use.

Each run holds a lease on the output folder (two runs never interleave), discovers the partitions with their
fingerprints, trains or updates the model only when there is something new, scores only the partitions that the
ledger says are new, changed or requested (one read and one write per partition), removes the outputs of
partitions that left the lake, and writes a run summary. Tasks exchange only config paths and small records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

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

from flows import events
from flows.handoff import (
    TRAINING_DEPLOYMENT,
    DriftPolicyAction,
    NoChampionPolicy,
    ensure_champion,
    start_drift_training,
)
from sae_pipeline import alerts, incidents, pipeline, storage, tables, updating, volume
from sae_pipeline.alerts import EventRecord
from sae_pipeline.config import PipelineConfig, load_config
from sae_pipeline.lease import RunLease
from sae_pipeline.records import (
    DriftPolicyOutcome,
    DriftRequest,
    FailedPartition,
    IncidentCounts,
    PartitionRecord,
    PartitionResult,
    RunKind,
    ScoringModel,
    ScoringPlan,
    TrainingOutcome,
    split_refused,
)
from sae_pipeline.runs import RunSummary, build_run_summary, format_summary, write_run_summary
from sae_pipeline.storage import read_bytes
from sae_pipeline.volume import FreshnessVerdict, VolumeVerdict

#: Parameter types that a Prefect server checks when a run is created, so a deployment refuses a bad value at once.
ConfigUri = Annotated[
    str, Field(min_length=1, description="pipeline YAML: a path (relative to the project) or s3:// URI")
]
PartitionSelection = Annotated[
    str,
    Field(
        pattern=r"^\s*[^,=\s][^,=]*=[^,]*(,\s*[^,=\s][^,=]*=[^,]*)*$",
        description="partition names and ranges FIRST..LAST, e.g. day=2026-11-01..day=2026-11-07",
    ),
]
TableVersion = Annotated[
    int, Field(ge=0, description="Delta table version or Iceberg snapshot id to read (default: the latest)")
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
def discover_partitions(config_path: str, as_of: int | None = None) -> list[PartitionRecord]:
    """Return a record (name, URI, fingerprint; table version and files) per partition of the input table."""
    return tables.partition_records(load_config(config_path).lake, as_of)


@task(name="train-or-update")
def train_or_update(
    config_path: str, partitions: list[PartitionRecord], retrain: bool, progress: bool, drifted: list[str] | None = None
) -> TrainingOutcome:
    """Train, fine-tune the champion, or skip when nothing changed; return what was done."""
    return updating.train_or_update(
        load_config(config_path), partitions, retrain=retrain, progress=progress, drifted=drifted or []
    )


@io_task(name="plan-scoring")
def plan_scoring(
    config_path: str,
    partitions: list[PartitionRecord],
    model_version: str,
    requested: list[str] | None,
    backfill: bool,
    rescore: bool,
) -> ScoringPlan:
    """Compare the lake with the ledger: what to score and why, what is up to date, what was removed."""
    return pipeline.plan_scoring(load_config(config_path), partitions, model_version, requested, backfill, rescore)


@io_task(name="score-partition", task_run_name="score {partition.name}")
def score_partition(
    config_path: str,
    partition: PartitionRecord,
    model_version: str,
    run_id: str,
    scored_at: dt.datetime,
    reason: str,
    progress: bool,
    lease_token: str,
) -> PartitionResult:
    """Validate, score and report one partition, then commit it to the ledger, as long as the run still holds the
    output folder's lease; return its counts and URIs."""
    return pipeline.score_partition(
        load_config(config_path),
        partition,
        model_version,
        run_id,
        scored_at,
        reason=reason,
        progress=progress,
        lease_token=lease_token,
    )


@io_task(name="write-drift-trend")
def write_drift_trend(config_path: str, freshness: FreshnessVerdict | None = None) -> str:
    """Rewrite the lake-level drift trend page from every partition's report and the run's freshness verdict."""
    return pipeline.write_drift_trend(load_config(config_path), freshness)


@io_task(name="write-incidents")
def write_incidents(config_path: str) -> IncidentCounts:
    """Regroup the committed partitions' flagged rows into incidents and rewrite the incidents table."""
    return incidents.write_incidents(load_config(config_path))


@io_task(name="write-anomaly-pages")
def write_anomaly_pages(config_path: str) -> str:
    """Rewrite the anomalies pages (`drift/anomalies.html` and each partition's) from the incidents table."""
    return incidents.write_anomaly_pages(load_config(config_path)).index_uri


@io_task(name="check-volume")
def check_volume(config_path: str, partitions: list[str]) -> list[VolumeVerdict]:
    """Judge each committed partition's rows and quarantined share against the partitions before it, and record
    the verdict in its drift report (report.json, and report.html and report.md rendered again)."""
    config = load_config(config_path)
    verdicts = volume.check_volume(config, partitions)
    for verdict in verdicts:
        volume.add_to_report(config, verdict)
    return verdicts


@io_task(name="collect-events")
def collect_events(
    config_path: str,
    run_id: str,
    scored: list[PartitionResult],
    incident_counts: IncidentCounts | None,
    volumes: list[VolumeVerdict],
    freshness: FreshnessVerdict | None,
    trainings: list[TrainingOutcome],
    failed: list[FailedPartition],
) -> list[EventRecord]:
    """The events this run announces (`sae_pipeline.alerts`): partitions scored and failed, incidents opened,
    drift, flagged rate, volume, freshness, promotions."""
    config = load_config(config_path)
    records = alerts.training_events(config, *trainings) + alerts.failure_events(config, failed, run_id)
    records += alerts.partition_events(config, scored, incident_counts, volumes, run_id)
    if incident_counts is not None:
        records += alerts.incident_events(config, incident_counts.opened)
    return records + alerts.freshness_events(config, freshness)


@io_task(name="vacuum-output-tables")
def vacuum_output_tables(config_path: str) -> int:
    """Remove the Delta output tables' files that the current version no longer references, once old enough."""
    return pipeline.vacuum_output_tables(load_config(config_path))


@io_task(name="remove-partition", task_run_name="remove {name}")
def remove_partition(config_path: str, name: str) -> None:
    """Delete the outputs and ledger entry of a partition that left the lake."""
    pipeline.remove_partition_outputs(load_config(config_path), name)


class PartitionFailures(RuntimeError):
    """Some partitions failed (the others were committed); `summary` is the run summary that lists them (in
    `summary.failed`), as written to `runs/<run id>.json`."""

    def __init__(self, message: str, summary: RunSummary):
        super().__init__(message)
        self.summary = summary


def _collect(futures: dict[str, object]) -> tuple[list[PartitionResult], list[FailedPartition]]:
    """Wait for every partition task; return (results, failures)."""
    wait(list(futures.values()))
    results, failures = [], []
    for name, future in futures.items():
        try:
            outcome = future.result()
        except Exception as error:  # each partition fails alone; the run reports them all
            failures.append(FailedPartition(partition=name, error=str(error)))
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
    runner = (
        DaskTaskRunner(address=scoring.dask_address)
        if scoring.dask_address
        else DaskTaskRunner(cluster_kwargs=local_cluster)
    )
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
    wanted = (
        f"scoring.dask_address is {configured}" if configured else "scoring.dask_address is not set (a local cluster)"
    )
    raise ValueError(
        f"{wanted}, but this process already has a Dask client for {open_scheduler}, which prefect-dask would use "
        f"instead: close that client, or set scoring.dask_address to {open_scheduler}"
    )


def _publish_artifacts(summary: RunSummary, scored: Sequence[PartitionResult]) -> None:
    create_table_artifact(
        key="sae-run-summary",
        table=[partition.model_dump(exclude={"quarantine_uri"}) for partition in summary.partitions]
        or [{"message": summary.message}],
        description=f"Run {summary.run_id}: {summary.message}",
    )
    for result in scored:
        create_markdown_artifact(
            key="drift-" + "".join(c if c.isalnum() else "-" for c in result.partition.lower()),
            markdown=read_bytes(result.drift_markdown_uri).decode(),
            description=f"Drift report for {result.partition}",
        )


@dataclass
class LakeRun:
    """A run in progress, holding the output folder's lease: its config, id and start, the lake's partitions
    (`usable` ones, and failures for those whose key values were `refused`)."""

    kind: RunKind
    config_path: str
    config: PipelineConfig
    run_id: str
    started_at: dt.datetime
    lease_token: str
    partitions: list[PartitionRecord]
    usable: list[PartitionRecord]
    refused: list[FailedPartition]


@dataclass
class Scoring:
    """What the scoring step did: the model, the plan, the partitions committed and those that failed."""

    model: ScoringModel
    plan: ScoringPlan
    results: list[PartitionResult] = field(default_factory=list)
    failures: list[FailedPartition] = field(default_factory=list)
    incidents: IncidentCounts | None = None
    volume: list[VolumeVerdict] = field(default_factory=list)
    freshness: FreshnessVerdict | None = None


@contextmanager
def _lake_run(kind: RunKind, config_path: str, as_of: int | None = None) -> Iterator[LakeRun]:
    """Take the output folder's lease for the whole run, clear what crashed writers left, list the partitions (of
    the table at `as_of`, if given)."""
    logger = get_run_logger()
    config_path = str(Path(config_path).resolve()) if "://" not in config_path else config_path
    config = load_config(config_path)
    started_at = dt.datetime.now(dt.UTC)
    run_id = str(flow_run.id or started_at.strftime("%Y%m%dT%H%M%S"))
    with RunLease(config.output.lease_uri, run_id, config.run.lease_ttl_seconds) as lease:
        pipeline.clear_staging(config, started_at)
        partitions = discover_partitions(config_path, as_of)
        usable, refused = split_refused(partitions)  # refused keys fail without being read
        logger.info("%d partition(s) in %s", len(usable), config.lake.location)
        yield LakeRun(kind, config_path, config, run_id, started_at, lease.token, partitions, usable, refused)


def _train(run: LakeRun, retrain: bool, progress: bool, drifted: list[str] | None = None) -> TrainingOutcome:
    """The training step: train, update the champion, or skip."""
    training = train_or_update(run.config_path, run.usable, retrain, progress, drifted)
    get_run_logger().info("training: %s (%s)", training.action, training.reason)
    return training


def _score(
    run: LakeRun,
    partitions: list[str] | None,
    backfill: bool,
    rescore_with: str | None,
    model: str | None,
    progress: bool,
) -> Scoring:
    """The scoring step: plan, score each partition (one task each, on the configured task runner), remove the
    outputs of partitions that left the lake, judge their volume and the lake's freshness, then rewrite the drift
    trend page, the incidents and their pages (with nothing new, only the trend page, when the lake is late)."""
    scoring_model = pipeline.scoring_model(run.config, rescore_with or model)
    version = scoring_model.model_version
    plan = plan_scoring(run.config_path, run.partitions, version, partitions, backfill, bool(rescore_with))
    scoring = Scoring(scoring_model, plan)
    by_name = {record.name: record for record in run.usable}
    with scoring_task_runner(run.config) as runner:
        futures = {
            name: runner.submit(
                score_partition,
                dict(
                    config_path=run.config_path,
                    partition=by_name[name],
                    model_version=version,
                    run_id=run.run_id,
                    scored_at=run.started_at,
                    reason=reason,
                    progress=progress,
                    lease_token=run.lease_token,
                ),
            )
            for name, reason in scoring.plan.to_score.items()
        }
        futures.update({name: remove_partition.submit(run.config_path, name) for name in scoring.plan.removed})
        scoring.results, scoring.failures = _collect(futures)
    scoring.freshness = volume.check_freshness(run.config, [record.name for record in run.usable])
    if scoring.results:
        scoring.volume = check_volume(run.config_path, [result.partition for result in scoring.results])
    if scoring.results or scoring.plan.removed:
        write_drift_trend(run.config_path, scoring.freshness)
        scoring.incidents = write_incidents(run.config_path)
        write_anomaly_pages(run.config_path)
        vacuum_output_tables(run.config_path)
    elif scoring.freshness is not None and scoring.freshness.late:  # nothing new: the trend page says it is late
        write_drift_trend(run.config_path, scoring.freshness)
    return scoring


def _respond_to_drift(
    run: LakeRun, scoring: Scoring | None, progress: bool, hand_off: bool = False
) -> tuple[DriftRequest | None, DriftPolicyOutcome | None]:
    """Do what the drift policy asks of this run (`pipeline.drift_request`): a combined run trains on the drifted
    partitions now; the hand-off to the training deployment happens after the lease is released."""
    request = pipeline.drift_request(scoring.results if scoring else [], run.kind, hand_off)
    if request is None:
        return None, None
    training = None
    if request.action == "train-now":
        training = train_or_update(run.config_path, run.usable, False, progress, list(request.partitions))
    return request, DriftPolicyOutcome(partitions=request.partitions, training=training)


def _summarise(
    run: LakeRun,
    training: TrainingOutcome | None = None,
    scoring: Scoring | None = None,
    drift_policy: DriftPolicyOutcome | None = None,
) -> RunSummary:
    """Build the run summary and write it to `runs/<run id>.json` (still under the lease)."""
    summary = build_run_summary(
        run.config,
        run.run_id,
        run.kind,
        run.started_at,
        training=training,
        model=scoring.model if scoring else None,
        plan=scoring.plan if scoring else None,
        scored=scoring.results if scoring else [],
        failed=run.refused + (scoring.failures if scoring else []),
        drift_policy=drift_policy,
        incidents=scoring.incidents if scoring else None,
        config_path=run.config_path,
        volume=scoring.volume if scoring else (),
        freshness=scoring.freshness if scoring else None,
    )
    write_run_summary(summary)
    _announce(run, summary, scoring, training, drift_policy.training if drift_policy else None)
    return summary


def _announce(run: LakeRun, summary: RunSummary, scoring: Scoring | None, *trainings: TrainingOutcome | None) -> None:
    """Emit the run's Prefect events (unless `events.enabled` is false) and wait until they reach the API."""
    if not run.config.events.enabled:
        return
    records = collect_events(
        run.config_path,
        run.run_id,
        scoring.results if scoring else [],
        scoring.incidents if scoring else None,
        scoring.volume if scoring else [],
        scoring.freshness if scoring else None,
        [training for training in trainings if training is not None],
        summary.failed,
    )
    get_run_logger().info("%d event(s) emitted", events.emit(records))


def _report(summary: RunSummary, scoring: Scoring | None) -> RunSummary:
    """Publish the run's artifacts and log its summary; raise `PartitionFailures` if any partition failed."""
    _publish_artifacts(summary, scoring.results if scoring else [])
    get_run_logger().info("run summary:\n%s", format_summary(summary))
    if summary.failed:
        raise PartitionFailures(
            f"{len(summary.failed)} partition(s) failed (the others were committed; the next run retries these):\n"
            + "\n".join(f"- {failure.partition}: {failure.error}" for failure in summary.failed),
            summary,
        )
    return summary


@flow(name="sae-train-or-update", flow_run_name="train-or-update {config_path}", log_prints=True)
def train_or_update_flow(
    config_path: ConfigUri,
    retrain: bool = False,
    progress: bool = False,
    drifted: list[PartitionSelection] | None = None,
) -> RunSummary:
    """Train a model (first run, `retrain`, changed settings) or fine-tune the champion on new data (and on the
    `drifted` partitions a scoring run asked for); else do nothing. Return the run summary."""
    with _lake_run("train", config_path) as run:
        summary = _summarise(run, training=_train(run, retrain, progress, drifted))
    return _report(summary, None)


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
    as_of: TableVersion | None = None,
) -> RunSummary:
    """Score new, changed or requested partitions with the champion (or `model`); remove outputs of deleted ones.

    With no champion, `on_no_champion` says what to do: fail, `train` (run `training_deployment`, wait up to
    `training_timeout_s`, then score) or `start-training` (run it and fail at once). When the drift policy asks for
    training, `on_drift` either records it in the run summary (`record`) or also starts `training_deployment` on
    the drifted partitions without waiting (`start-training`): these partitions keep the scores of the current
    champion, and the next scoring runs use whatever that training promotes. Return the run summary (with the
    hand-off in `drift_handoff`). `as_of` scores a Delta or Iceberg table as it was at that version or snapshot."""
    ensure_champion(config_path, rescore_with or model, on_no_champion, training_deployment, training_timeout_s)
    with _lake_run("score", config_path, as_of) as run:
        scoring = _score(run, partitions, backfill, rescore_with, model, progress)
        request, drift_policy = _respond_to_drift(run, scoring, progress, hand_off=on_drift == "start-training")
        summary = _summarise(run, scoring=scoring, drift_policy=drift_policy)
    summary = _report(summary, scoring)
    if request is not None and request.action == "hand-off":  # the lease is released: the training run needs it
        handoff = start_drift_training(config_path, list(request.partitions), training_deployment)
        summary = summary.model_copy(update={"drift_handoff": handoff})
        write_run_summary(summary)
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
    as_of: TableVersion | None = None,
) -> RunSummary:
    """Train-or-update then score (`mode` run), or only one of them; return the run summary. A combined run also
    trains on the partitions whose drift the drift policy flags. `as_of`: the Delta version or Iceberg snapshot
    to read (default: the table's latest)."""
    with _lake_run(mode, config_path, as_of) as run:
        training = _train(run, retrain, progress) if mode != "score" else None
        scoring = _score(run, partitions, backfill, rescore_with, model, progress) if mode != "train" else None
        _, drift_policy = _respond_to_drift(run, scoring, progress)
        summary = _summarise(run, training, scoring, drift_policy)
    return _report(summary, scoring)


def run_in_process(**parameters) -> RunSummary:
    """Run the combined flow in this process (CLI, notebooks) without the heartbeat thread, which adds ~1 s per run
    and only matters for crash detection by a remote API."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        try:
            return lake_pipeline(**parameters)
        except ParameterTypeError as error:  # the CLI reports ValueErrors as one `error:` line
            raise ValueError(str(error)) from None
