"""The embedded Prefect server of a CLI run: a child process that answers before the flow starts and dies with
the command.

When no `PREFECT_API_URL` is configured, the CLI serves Prefect's API app itself (`create_app(ephemeral=True)` under
uvicorn, which is what Prefect's own temporary server runs) on a free loopback port and points `PREFECT_API_URL`
at it. Prefect's documented way to use a server is exactly that setting; starting the server here, rather than
through Prefect's temporary-server helper, gives what a busy machine needs: a start timeout long enough for a first
start (which creates and migrates the database), one retry, one clear error, the server's output hidden unless
`--verbose`, and a child that the kernel kills when the command dies, even by SIGKILL (Linux parent-death signal).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

#: Seconds one start may take unless the user set Prefect's own setting: a first start on a loaded 2-core machine
#: (database creation and migrations) has been seen to take well over Prefect's default of 20 s.
DEFAULT_START_TIMEOUT_S = 120
TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """The embedded server did not answer in time, twice; the message says how long it waited."""

    hint = (
        f"a busy machine can be slow to start it: raise {TIMEOUT_SETTING}, point PREFECT_API_URL at a running "
        "Prefect server, or rerun with --verbose to see the server's output"
    )


def create_embedded_app():
    """uvicorn factory of the child process: Prefect's API without its UI and background services."""
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


def start_timeout_s() -> float:
    """Prefect's startup-timeout setting when the user set it (environment or profile), else our default."""
    if TIMEOUT_SETTING in os.environ:
        return float(os.environ[TIMEOUT_SETTING])
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    explicit = "startup_timeout_seconds" in ephemeral.model_fields_set
    return float(ephemeral.startup_timeout_seconds) if explicit else DEFAULT_START_TIMEOUT_S


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dies_with_parent(parent_pid: int, prctl) -> None:  # runs in the child between fork and exec
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


class EmbeddedServer:
    """One Prefect API server child for this command. `launch()` starts it and sets `PREFECT_API_URL` at once
    (so the caller can import Prefect while it boots); `wait_until_ready()` waits, retrying once."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.process: subprocess.Popen | None = None
        # One port for both tries: Prefect keeps the API URL it read first.
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._started_at = 0.0
        self._stop_registered = False

    def launch(self) -> None:
        prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
        parent_pid = os.getpid()
        environment = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
        quiet = {} if self.verbose else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"{__name__}:create_embedded_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={**environment, "PREFECT_UI_ENABLED": "0"},
            preexec_fn=(lambda: _dies_with_parent(parent_pid, prctl)) if prctl else None,
            stdin=subprocess.DEVNULL,
            **quiet,
        )
        self._started_at = time.monotonic()
        os.environ["PREFECT_API_URL"] = self.api_url
        if not self._stop_registered:
            # Registered before Prefect's own exit handlers, so it runs after them: logs and events flush first.
            atexit.register(self.stop)
            self._stop_registered = True

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait(self, timeout_s: float) -> bool:
        while time.monotonic() - self._started_at < timeout_s:
            if self.process.poll() is not None:  # exited (e.g. its port was taken in the meantime)
                return False
            if self._answers():
                return True
            time.sleep(0.2)
        return False

    def wait_until_ready(self, timeout_s: float, on_retry) -> None:
        """Wait up to `timeout_s` for the launched server; if it is not up, start it once more and wait twice as
        long (a machine busy enough to miss the first deadline is likely still busy). Raises ServerStartError."""
        if self._wait(timeout_s):
            return
        self.stop(graceful=False)
        on_retry(
            f"the embedded Prefect server did not answer within {timeout_s:g} s; "
            f"retrying once, waiting up to {2 * timeout_s:g} s"
        )
        self.launch()
        if self._wait(2 * timeout_s):
            return
        self.stop(graceful=False)
        raise ServerStartError(
            f"the embedded Prefect server did not start within {timeout_s:g} s, "
            f"nor on a retry within {2 * timeout_s:g} s"
        )

    def stop(self, graceful: bool = True) -> None:
        """Stop the server: politely after a run (it finishes its requests), at once when its start is abandoned
        (a starting server defers SIGTERM until it is up; SQLite keeps its database whole either way)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if graceful:
            process.terminate()
            try:
                process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait()
