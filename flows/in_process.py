"""Running the combined flow inside the CLI's own process, quietly, with a temporary Prefect server that cannot
outlive it. Lives in `flows/` because it manages Prefect; the CLI imports it only when a command runs a flow."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys

from prefect.server.api import server as prefect_server
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

from flows.lake_pipeline import run_in_process
from sae_pipeline.runs import RunSummary

_PR_SET_PDEATHSIG = 1


def _silence_console_logs() -> None:
    """Keep log records off the terminal (they still reach the Prefect API, so the UI shows them): without
    `--verbose` the command prints its summary and at most one `error:` line."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.CRITICAL + 1)


def _dies_with_parent(parent_pid: int, prctl) -> None:  # runs in the child between fork and exec
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


class _ChildProcesses:
    """`subprocess` as Prefect's server module sees it while the CLI starts the temporary server: the same module,
    except that `Popen` children are killed when this process dies (even by SIGKILL) and, unless verbose, stay
    silent."""

    def __init__(self, verbose: bool):
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        quiet = {} if verbose else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.Popen = functools.partial(
            subprocess.Popen, preexec_fn=functools.partial(_dies_with_parent, os.getpid(), prctl), **quiet
        )

    def __getattr__(self, name: str):
        return getattr(subprocess, name)


def _start_temporary_server(verbose: bool) -> None:
    """Start Prefect's temporary server (when no API URL is configured) as a child that cannot outlive this
    process: Prefect reuses it for the rest of the run and stops it at exit; a SIGKILL of the CLI kills it too
    (Linux parent-death signal, armed from the main thread, which lives as long as the process)."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value() or not sys.platform.startswith("linux"):
        return
    module_subprocess = prefect_server.subprocess
    prefect_server.subprocess = _ChildProcesses(verbose)
    try:
        prefect_server.SubprocessASGIServer().start()
    finally:
        prefect_server.subprocess = module_subprocess


def run(config_path: str, mode: str, progress: bool, verbose: bool, **options) -> RunSummary:
    """Run the combined flow here and return its run summary; without `verbose`, logs stay off the terminal."""
    if not verbose:
        _silence_console_logs()
    _start_temporary_server(verbose)
    return run_in_process(config_path=config_path, mode=mode, progress=progress, **options)
