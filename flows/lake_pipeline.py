"""The main flow: discover partitions -> validate -> train (or load a model) -> score -> drift reports -> summary.

Tasks exchange only config paths and small records (names, URIs, counts); data moves through the lake.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from sae_pipeline import pipeline
from sae_pipeline.config import ConfigError, load_config
from sae_pipeline.lake import LakeReadError, read_bytes
from sae_pipeline.runs import build_run_summary, format_summary
from sae_pipeline.schema import InputSchemaError

#: Errors that a retry cannot fix: bad config or bad data. Anything else (storage hiccups) is retried.
_PERMANENT_ERRORS = (ConfigError, InputSchemaError, LakeReadError, ValueError)


def _retry_transient(task, task_run, state) -> bool:
    """Retry only errors that might go away (I/O), never bad data or bad config."""
    try:
        state.result()
    except _PERMANENT_ERRORS:
        return False
    except Exception:
        return True
    return False


io_task = task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient)


@io_task(name="discover-partitions")
def discover_partitions(config_path: str) -> list[dict]:
    """Return a record per partition of the input table."""
    return pipeline.list_partitions(load_config(config_path))


@io_task(name="validate-partition", task_run_name="validate {partition[name]}")
def validate_partition(config_path: str, partition: dict) -> dict:
    """Split one partition into valid and quarantined rows; return the counts and URIs."""
    return pipeline.validate_partition(load_config(config_path), partition)


@task(name="train-model")
def train_model(config_path: str, validated: list[dict], progress: bool) -> dict:
    """Fit the feature encoder and the SAE on the training partitions; return the model record."""
    return pipeline.train_model(load_config(config_path), validated, progress=progress)


@io_task(name="score-partition", task_run_name="score {validated[partition]}")
def score_partition(config_path: str, validated: dict, model_uri: str, scored_at: dt.datetime, progress: bool) -> dict:
    """Score one partition and write its drift report; return the counts and URIs."""
    return pipeline.score_partition(load_config(config_path), validated, model_uri, scored_at, progress=progress)


class PartitionFailures(RuntimeError):
    """One or more partitions failed; the message lists each one's error."""


def _results(futures) -> list[dict]:
    """Wait for all futures, then raise one error that names every failed partition."""
    wait(futures)
    failures = [future for future in futures if future.state.is_failed()]
    if failures:
        messages = []
        for future in failures:
            try:
                future.result()
            except Exception as error:  # collected to report all failed partitions at once
                messages.append(str(error))
        raise PartitionFailures(f"{len(messages)} partition(s) failed:\n" + "\n".join(f"- {m}" for m in messages))
    return [future.result() for future in futures]


def _publish_artifacts(summary, scored: list[dict]) -> None:
    create_table_artifact(
        key="sae-run-summary",
        table=[partition.model_dump(exclude={"quarantine_uri"}) for partition in summary.partitions],
        description=f"Rows per partition for run {summary.run_id} (model {summary.model_version})",
    )
    for record in scored:
        create_markdown_artifact(
            key="drift-" + "".join(c if c.isalnum() else "-" for c in record["partition"].lower()),
            markdown=read_bytes(record["drift_report_uri"]).decode(),
            description=f"Drift report for {record['partition']}",
        )


@flow(name="sae-lake-pipeline", flow_run_name="{mode} {config_path}", log_prints=True)
def lake_pipeline(config_path: str, mode: str = "run", model_uri: str | None = None, progress: bool = False) -> dict:
    """Validate, train (mode run/train) and score (mode run/score) a Parquet lake; return the run summary.

    mode "score" uses `model_uri`, or the champion model under the output folder when it is not given.
    """
    if mode not in ("run", "train", "score"):
        raise ValueError(f"mode must be run, train or score, got {mode!r}")
    logger = get_run_logger()
    config_path = str(Path(config_path).resolve())
    config = load_config(config_path)
    started_at = dt.datetime.now(dt.UTC)

    partitions = discover_partitions(config_path)
    logger.info("%d partition(s) under %s", len(partitions), config.lake.uri)
    validated = _results([validate_partition.submit(config_path, partition) for partition in partitions])

    if mode == "score":
        model = pipeline.existing_model(config, model_uri)
    else:
        model = train_model(config_path, validated, progress)
        logger.info("trained model %s (threshold %.4g)", model["model_version"], model["threshold"])

    scored = []
    if mode != "train":
        scored = _results(
            [score_partition.submit(config_path, record, model["model_uri"], started_at, progress) for record in validated]
        )
    summary = build_run_summary(
        config, str(flow_run.id or started_at.strftime("%Y%m%dT%H%M%S")), started_at, model, mode != "score",
        validated, scored,
    )
    _publish_artifacts(summary, scored)
    logger.info("run summary:\n%s", format_summary(summary))
    return summary.model_dump(mode="json")


def run_in_process(config_path: str, mode: str = "run", model_uri: str | None = None, progress: bool = False) -> dict:
    """Run the flow in this process (CLI, notebooks) without the heartbeat thread, which adds ~1 s per run
    and only matters for crash detection by a remote API."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return lake_pipeline(config_path=config_path, mode=mode, model_uri=model_uri, progress=progress)
