"""A lease on the output folder, so that two runs never write the same outputs at once.

It lives on the same storage as the outputs (`<output>/_lease.json`), so it works across processes, machines and
S3, with or without a Prefect server. The holder renews it in a background thread; it expires `ttl` seconds after
the last renewal, so a run that died on another machine frees the output after at most `ttl`. A holder on the
same machine whose process is gone is detected at once, so a rerun after a crash does not wait.

Acquisition is write-then-confirm: a lease is written only when absent, expired or dead, and counts as ours only
if it still names us after a short settling pause. Local files are created with O_EXCL, which is atomic; on object
storage the pause covers the window in which another starter could have overwritten it. A process that already
holds the lease may enter it again (the CLI takes it before starting Prefect, then runs the flow in-process).

The lease also fences work done elsewhere on the run's behalf: a partition task is given the holder's `token` and
calls `confirm_holder` before each commit, so a task that outlived its run (on a Dask worker, after the flow process
died and another run took the folder over) fails instead of publishing over the new run's outputs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid

import pyarrow.fs as pafs

from sae_pipeline import storage

logger = logging.getLogger(__name__)

#: How long a writer on object storage waits before confirming the lease is still its own.
SETTLE_SECONDS = 1.0


class LeaseHeldError(RuntimeError):
    """Another run holds the output folder; the message says which run, where, and until when."""


class LeaseLostError(RuntimeError):
    """The run this work belongs to no longer holds the output folder: its outputs must not be committed."""


def read_lease(uri: str) -> dict | None:
    """The lease record at `uri`; None when there is none, {} when its content is torn or foreign."""
    try:
        return json.loads(storage.read_bytes(uri))
    except storage.LakeReadError:
        return None
    except ValueError:
        return {}


def confirm_holder(uri: str, token: str, what: str) -> None:
    """Raise LeaseLostError, naming `what` was about to be committed, unless the lease at `uri` carries `token`.
    A check, not a lock: a takeover between this read and the commit that follows it is not caught."""
    current = read_lease(uri)
    if not current or current.get("token") != token:
        holder = f"run {current.get('run_id', '?')}" if current else "no run"
        raise LeaseLostError(
            f"{what} not committed: this run no longer holds the output folder lease {uri} ({holder} holds it now); "
            "the run that holds it decides what is scored"
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RunLease:
    """`with RunLease(uri, run_id, ttl_seconds):` holds the output folder for the duration of a run."""

    def __init__(self, uri: str, run_id: str, ttl_seconds: int, wait_seconds: float = 0.0):
        self.uri = uri
        self.run_id = run_id
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self.token = uuid.uuid4().hex
        self._nested = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # --- the record -----------------------------------------------------------------------------------------------

    def _record(self) -> dict:
        now = _now()
        return {
            "token": self.token,
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "renewed_at": now.isoformat(),
            "expires_at": (now + dt.timedelta(seconds=self.ttl_seconds)).isoformat(),
        }

    @staticmethod
    def _is_stale(record: dict) -> bool:
        """Expired, unreadable, or held by a process of this machine that no longer exists."""
        try:
            if dt.datetime.fromisoformat(record["expires_at"]) < _now():
                return True
            if record["host"] == socket.gethostname():
                os.kill(record["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # the process exists under another user
            return False
        except (KeyError, TypeError, ValueError):
            return True
        return False

    # --- acquire / renew / release ----------------------------------------------------------------------------------

    def _try_acquire(self) -> dict | None:
        """Take the lease if it is free; return the blocking holder's record otherwise."""
        current = read_lease(self.uri)
        if current and current.get("host") == socket.gethostname() and current.get("pid") == os.getpid():
            self._nested = True  # this process already holds it (the CLI around its in-process flow)
            self.token = current["token"]  # what this run's tasks confirm before they commit
            return None
        if current is not None and not self._is_stale(current):
            return current
        payload = json.dumps(self._record()).encode()
        fs, path = storage.filesystem_for(self.uri)
        if current is None and isinstance(fs, pafs.LocalFileSystem):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return read_lease(self.uri) or {}
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
            return None
        storage.write_bytes(self.uri, payload)
        time.sleep(SETTLE_SECONDS)
        confirmed = read_lease(self.uri)
        return None if confirmed and confirmed.get("token") == self.token else (confirmed or {})

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise LeaseHeldError(
                    f"another run holds the output folder ({self.uri}): run {holder.get('run_id', '?')} on "
                    f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}), lease valid until "
                    f"{holder.get('expires_at', '?')}; wait for it to finish, or delete that file if the run is dead"
                )
            time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))
        if self._nested:
            return
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="run-lease", daemon=True)
        self._renewer.start()
        logger.info("holding the run lease %s", self.uri)

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            current = read_lease(self.uri)
            if not current or current.get("token") != self.token:
                logger.error("run lease %s was taken over by another run", self.uri)
                return
            storage.write_bytes(self.uri, json.dumps(self._record()).encode())

    def release(self) -> None:
        if self._nested:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current = read_lease(self.uri)
        if current and current.get("token") == self.token:
            storage.delete_file(self.uri)

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
