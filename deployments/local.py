"""A local Prefect round trip on 127.0.0.1: `up` (server, pools, deployments, workers), `smoke`, `down`.

Run with the project's virtualenv (the Makefile's deploy-local, deploy-smoke and deploy-stop do):

    .venv/bin/python deployments/local.py up      # state in $PREFECT_HOME (default .prefect/), port $PREFECT_PORT
    .venv/bin/python deployments/local.py smoke [DEPLOYMENT] [--param NAME=VALUE ...]
    .venv/bin/python deployments/local.py down    # stops every process `up` started, by the ids in $PREFECT_HOME/*.pid

Each process starts in its own session (process group); its id is recorded in `$PREFECT_HOME/<name>.pid` and
`down` stops the group and every descendant (a worker's flow runs start sessions of their own).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project's virtualenv: workers run flows with their own Python
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
#: Local pools. The GPU pool is a process pool here so the score -> train hand-off runs without a cluster; on a
#: cluster create it from deployments/gpu-kubernetes-pool.json (or gpu-docker-pool.json) instead.
POOLS = {"sae-cpu": "cpu-process-pool.json", "sae-gpu": "cpu-process-pool.json"}
SMOKE_DEPLOYMENT = "sae-lake-pipeline/sample"


def settings() -> tuple[Path, int]:
    home = Path(os.environ.get("PREFECT_HOME") or ROOT / ".prefect").resolve()
    return home, int(os.environ.get("PREFECT_PORT") or 4242)


def child_env(home: Path, port: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("PREFECT_API_KEY", "PREFECT_PROFILE")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_EXTRA_LOGGERS="sae_pipeline",
        PREFECT_WORKER_QUERY_SECONDS="2",  # a local worker picks up a new run within 2 s (default 10)
        # the server logs asyncio cancellations when it stops; they are noise, not failures
        PREFECT_LOGGING_LOGGERS_UVICORN_LEVEL="CRITICAL",
    )
    return env


def _start(name: str, command: list[str], home: Path, env: dict[str, str]) -> int:
    with open(home / f"{name}.log", "ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (home / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _create_pool(port: int, name: str, template: dict) -> None:
    """Create (or update) a process work pool through the REST API, as `prefect work-pool create` does."""
    body = {"name": name, "type": "process", "base_job_template": template}
    api = f"http://127.0.0.1:{port}/api/work_pools/"
    try:
        _request(api, "POST", body)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise SystemExit(f"creating work pool {name} failed: {error.code} {error.read().decode()[:2000]}") from None
        _request(api + name, "PATCH", {"base_job_template": template})


def _request(url: str, method: str, body: dict) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=30).close()


def _prefect(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`prefect {' '.join(args)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def up(wait_s: float = 90) -> None:
    """Start the server, create the pools, deploy everything, start one worker per pool."""
    home, port = settings()
    home.mkdir(parents=True, exist_ok=True)
    running = [p.name for p in home.glob("*.pid") if p.read_text().strip().isdigit() and _alive(int(p.read_text()))]
    if running:
        raise SystemExit(f"already running ({', '.join(running)} in {home}): run `make deploy-stop` first")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is in use: pick another with PREFECT_PORT=N")
    env = child_env(home, port)
    started = time.monotonic()
    print(f"starting a Prefect server on 127.0.0.1:{port} (state in {home})", flush=True)
    server = _start(
        "server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], home, env
    )
    while not _healthy(port):
        if not _alive(server) or time.monotonic() - started > wait_s:
            stop()
            raise SystemExit(
                f"the Prefect server did not become healthy; its log ({home / 'server.log'}):\n"
                f"{_tail(home / 'server.log')}"
            )
        time.sleep(0.5)
    try:
        for pool, template in POOLS.items():
            _create_pool(port, pool, json.loads((ROOT / "deployments" / template).read_text()))
            _start(f"worker-{pool}", [str(BIN / "prefect"), "worker", "start", "--pool", pool], home, env)
        print(
            f"pools {', '.join(POOLS)} created, workers starting; deploying {PREFECT_FILE.relative_to(ROOT)}",
            flush=True,
        )
        _prefect(["--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)], env)
    except BaseException:
        stop()
        raise
    api = f"http://127.0.0.1:{port}"
    print(
        f"ready in {time.monotonic() - started:.0f} s: server, deployments, workers for {', '.join(POOLS)}\n"
        f"  UI:      {api}\n"
        f"  use it:  export PREFECT_API_URL={api}/api PREFECT_HOME={home}\n"
        f"  run:     .venv/bin/prefect deployment run '{SMOKE_DEPLOYMENT}' --watch\n"
        "           .venv/bin/prefect deployment run 'sae-score/score' --param partitions='[\"day=2026-11-09\"]'\n"
        f"  check:   make deploy-smoke    stop: make deploy-stop    logs: {home}/*.log",
        flush=True,
    )


def smoke(deployment: str, parameters: dict, timeout_s: float) -> int:
    """Run a deployment, wait for it, print its final state (and why, if it did not complete); 0 iff Completed."""
    home, port = settings()
    os.environ.update(child_env(home, port))
    if not _healthy(port):
        print(f"no Prefect server on 127.0.0.1:{port}: run `make deploy-local` first", file=sys.stderr)
        return 1
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, LogFilter
    from prefect.deployments import run_deployment

    started = time.monotonic()
    print(f"running {deployment} {json.dumps(parameters) if parameters else ''}".rstrip(), flush=True)
    run = run_deployment(deployment, parameters=parameters, timeout=timeout_s, poll_interval=1, as_subflow=False)
    state = run.state
    print(
        f"flow run {run.name} ({run.id}): {state.name if state else 'unknown'} after {time.monotonic() - started:.0f} s"
    )
    with get_client(sync_client=True) as client:
        if state is not None and state.is_completed():
            for artifact in client.read_artifacts(
                artifact_filter=ArtifactFilter(key={"any_": ["sae-run-summary"]}),
                flow_run_filter=FlowRunFilter(id={"any_": [run.id]}),
            ):
                print(artifact.description)
            return 0
        print(f"reason: {state.message if state and state.message else 'none given'}")
        if state is None or not state.is_final():
            print(f"the run did not finish within {timeout_s:.0f} s: is a worker running? see {home}/worker-*.log")
        logs = client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [run.id]}, level={"ge_": 40}), limit=5)
        for log in logs:  # the end of each error (a traceback's last lines say what went wrong)
            print("log: " + "\n     ".join(log.message.strip().splitlines()[-3:]))
    return 1


def _descendants(pids: set[int]) -> set[int]:
    """Every process below `pids` (Linux /proc); empty elsewhere."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), set(pids)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _signal(pids: set[int], groups: set[int], sig: int) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(grace_s: float = 15) -> list[str]:
    """Stop the workers, then the server, with every process they started; return what was stopped."""
    home, _ = settings()
    files = sorted(home.glob("*.pid"), key=lambda p: p.name == "server.pid")  # workers first
    stopped = []
    for pid_file in files:
        text = pid_file.read_text().strip()
        if text.isdigit() and _alive(int(text)):
            pid = int(text)
            pids = {pid} | _descendants({pid})
            _signal(pids, {pid}, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            pids |= _descendants(pids)
            _signal({p for p in pids if _alive(p)}, {pid}, signal.SIGKILL)
            stopped.append(f"{pid_file.stem} (pid {pid})")
        pid_file.unlink()
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start server, pools, deployments and workers")
    smoke_command = commands.add_parser("smoke", help="run a deployment and wait for it")
    smoke_command.add_argument("deployment", nargs="?", default=SMOKE_DEPLOYMENT)
    smoke_command.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="JSON or text value")
    smoke_command.add_argument("--timeout", type=float, default=600)
    commands.add_parser("down", help="stop everything `up` started")
    args = parser.parse_args(argv)
    if args.command == "up":
        up()
    elif args.command == "smoke":
        parameters = {}
        for item in args.param:
            name, _, value = item.partition("=")
            try:
                parameters[name] = json.loads(value)
            except json.JSONDecodeError:
                parameters[name] = value
        return smoke(args.deployment, parameters, args.timeout)
    else:
        stopped = stop()
        print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
