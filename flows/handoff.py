"""Hand training to the train-or-update deployment: when a scoring run finds no champion (before it takes its
lease on the output folder, which the training run needs), or when its drift policy asks for training (after it
released the lease)."""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger
from prefect.deployments import run_deployment

from sae_pipeline.config import load_config
from sae_pipeline.records import DriftHandoff
from sae_pipeline.registry import ModelRegistry

#: What a scoring run does when there is no champion: `fail` (the registry's "no champion" error), `train`
#: (start the training deployment, wait for it, then score), `start-training` (start it and fail at once, saying
#: which run to wait for; the next scheduled scoring run uses the new champion).
NoChampionPolicy = Literal["fail", "train", "start-training"]

#: What a scoring run does when its drift policy asks for training: `record` it in the run summary only, or
#: `start-training` (start the training deployment on the drifted partitions, without waiting).
DriftPolicyAction = Literal["record", "start-training"]

TRAINING_DEPLOYMENT = "sae-train-or-update/train-or-update"


class NoChampionError(RuntimeError):
    """Scoring cannot start: no champion, and training was started elsewhere, failed, or did not finish."""


def ensure_champion(
    config_path: str, model: str | None, policy: NoChampionPolicy, deployment: str, timeout_s: float
) -> str | None:
    """Make sure a champion exists when scoring needs one; return the training run's name if one was started."""
    if policy == "fail" or model not in (None, ModelRegistry.CHAMPION):
        return None
    models_uri = load_config(config_path).output.models_uri
    if ModelRegistry(models_uri).champion() is not None:
        return None
    logger = get_run_logger()
    wait = policy == "train"
    logger.info(
        "no champion under %s: starting deployment %s%s", models_uri, deployment, " and waiting" if wait else ""
    )
    try:
        run = run_deployment(
            deployment, parameters={"config_path": config_path}, timeout=timeout_s if wait else 0, poll_interval=2
        )
    except Exception as error:
        raise NoChampionError(
            f"no champion under {models_uri}, and deployment {deployment!r} could not be started: {error}"
        ) from error
    if not wait:
        raise NoChampionError(
            f"no champion under {models_uri}: started training run {run.name!r} of {deployment}; "
            "scoring resumes with the next run once it has promoted a model"
        )
    state = run.state
    if state is None or not state.is_final():
        raise NoChampionError(
            f"no champion under {models_uri}: training run {run.name!r} of {deployment} did not finish within "
            f"{timeout_s:.0f} s (state {state.name if state else 'unknown'}; is a worker polling its work pool?)"
        )
    if not state.is_completed():
        raise NoChampionError(
            f"no champion under {models_uri}: training run {run.name!r} of {deployment} ended {state.name}: "
            f"{state.message}"
        )
    if ModelRegistry(models_uri).champion() is None:
        raise NoChampionError(
            f"training run {run.name!r} of {deployment} completed but promoted no champion under {models_uri}: "
            "see its run summary, then `sae-pipeline models promote`"
        )
    logger.info("training run %s promoted a champion; scoring", run.name)
    return run.name


def start_drift_training(config_path: str, partitions: list[str], deployment: str) -> DriftHandoff:
    """Start the training deployment on the partitions the drift policy named; return what was started (or why
    not: the scores are committed either way, so a failed hand-off is reported, not raised)."""
    logger = get_run_logger()
    try:
        run = run_deployment(deployment, parameters={"config_path": config_path, "drifted": partitions}, timeout=0)
    except Exception as error:  # reported in the run's result and log; the scoring itself succeeded
        logger.warning("drift policy asked for training, but deployment %s could not be started: %s", deployment, error)
        return DriftHandoff(deployment=deployment, partitions=partitions, error=str(error))
    logger.info("drift policy: started training run %s of %s on %s", run.name, deployment, ", ".join(partitions))
    return DriftHandoff(deployment=deployment, partitions=partitions, flow_run=run.name)
