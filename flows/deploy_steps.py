"""Deployment pull steps that put the reason for a failure on the flow run's state, not only in the worker's log.

A failing pull step makes the flow-run process exit before the flow starts; the worker then marks the run
`Crashed` ("infrastructure exited with non-zero status code 1") and the real reason sits in the worker's output.
These steps mark the run `Failed` with the reason first (the worker's later `Crashed` is refused for a run that is
already final), then raise. They are imported from the installed `flows` package, before the working directory is
set, so the worker's Python must have the project installed (`make install`, or the image).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

#: A file every checkout of the project has; its absence means the directory is not the project.
PROJECT_MARKER = "flows/lake_pipeline.py"


class PullStepError(RuntimeError):
    """The project could not be fetched or entered on this worker."""


def _fail_flow_run(message: str) -> None:
    """Set the current flow run (from PREFECT__FLOW_RUN_ID) to Failed with `message`; never raise."""
    flow_run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not flow_run_id:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Failed

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Failed(message=message), force=True)
    except Exception:  # reporting is best effort: the raised error still reaches the worker's log
        pass


def _reporting_failures(what: str, step, **kwargs: Any) -> Any:
    try:
        return step(**kwargs)
    except Exception as error:
        message = f"pull step {what} failed on worker host {socket.gethostname()}: {error}"
        _fail_flow_run(message)
        raise PullStepError(message) from error


def installed_project() -> Path:
    """The project that this Python has installed (a checkout for `pip install -e`, e.g. in the GPU image)."""
    import flows

    return Path(flows.__file__).resolve().parents[1]


def _enter(directory: str) -> dict:
    if "{{" in directory or "$" in directory:
        raise PullStepError(
            f"the project directory {directory!r} was never resolved: redeploy from the project root with "
            "`prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml`"
        )
    path = Path(directory).expanduser()
    if not (path / PROJECT_MARKER).is_file():
        installed = installed_project()
        if not (installed / PROJECT_MARKER).is_file():
            raise PullStepError(
                f"{path / PROJECT_MARKER} not found: the deployment was made from a checkout at {path}, which this "
                f"worker cannot see, and its Python has no project checkout installed ({installed}). Run the worker "
                "where that checkout is, install the project in the worker's image (deployments/Dockerfile), or use "
                "the git_clone pull step documented in deployments/prefect.yaml"
            )
        print(f"{path} is not on this worker; running the project installed at {installed}", flush=True)
        path = installed
    os.chdir(path)
    return {"directory": str(path)}


def enter_project(directory: str) -> dict:
    """Pull step: make the project checkout at `directory` the working directory; return `{"directory": ...}`."""
    return _reporting_failures("enter_project", _enter, directory=directory)


def git_clone_project(**kwargs: Any) -> dict:
    """Pull step: `prefect.deployments.steps.git_clone` (same arguments), then enter the clone."""
    from prefect.deployments.steps import git_clone

    cloned = _reporting_failures("git_clone", git_clone, **kwargs)
    return _reporting_failures("git_clone_project", _enter, directory=cloned["directory"])
