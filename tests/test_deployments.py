"""Deployments: work-pool templates as their workers render them, prefect.yaml against the flows, the pull step's
failure report, the no-champion hand-off, and a real round trip on 127.0.0.1 (server, pools, deploy, workers)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import write_lake_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = ROOT / "deployments"


def _template(name: str) -> dict:
    return json.loads((DEPLOYMENTS / name).read_text())


def _render(configuration_class, template: dict, values: dict):
    return asyncio.run(configuration_class.from_template_and_values(template, values))


@pytest.mark.parametrize(
    ("name", "pool_type"),
    [
        ("cpu-process-pool.json", "process"),
        ("gpu-kubernetes-pool.json", "kubernetes"),
        ("gpu-docker-pool.json", "docker"),
    ],
)
def test_templates_are_valid_base_job_templates(name, pool_type):
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.server.schemas.actions import WorkPoolCreate as ServerWorkPoolCreate

    template = _template(name)
    ServerWorkPoolCreate(name="check", type=pool_type, base_job_template=template)  # the server's own validation
    WorkPoolCreate(name="check", type=pool_type, base_job_template=template)


def test_kubernetes_template_asks_for_a_gpu_node():
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = _template("gpu-kubernetes-pool.json")
    job = _render(KubernetesWorkerJobConfiguration, template, {}).job_manifest
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["image"].endswith("sae-pipeline:gpu")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert job["spec"]["activeDeadlineSeconds"] == 6 * 3600
    overridden = _render(
        KubernetesWorkerJobConfiguration, template, {"gpu_count": 2, "node_selector": {"pool": "a100"}}
    )
    pod = overridden.job_manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2 and pod["nodeSelector"] == {
        "pool": "a100"
    }
    assert "TORCH_SPEC" in template["variables"]["properties"]["image"]["description"]


def test_docker_template_requests_gpus_from_docker():
    import docker.types
    from prefect_docker.worker import DockerWorkerJobConfiguration

    configuration = _render(DockerWorkerJobConfiguration, _template("gpu-docker-pool.json"), {"gpu_count": 1})
    (request,) = configuration.container_create_kwargs["device_requests"]
    built = docker.types.DeviceRequest(**request)  # what docker-py does with each entry
    assert (built.driver, built.count, built.capabilities) == ("nvidia", 1, [["gpu"]])


def test_prefect_yaml_deploys_typed_flows_to_the_pools():
    from prefect.flows import load_flow_from_entrypoint

    from flows.deploy_steps import enter_project

    spec = yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())
    assert spec["build"][0]["prefect.deployments.steps.run_shell_script"]["id"] == "project"
    assert spec["pull"] == [{"flows.deploy_steps.enter_project": {"directory": "{{ project.stdout }}"}}]
    assert callable(enter_project)
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {name: d["work_pool"]["name"] for name, d in deployments.items()} == {
        "score": "sae-cpu",
        "train-or-update": "sae-gpu",
        "sample": "sae-cpu",
    }
    for deployment in deployments.values():
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        flow.validate_parameters(deployment["parameters"])  # defaults fit the signature
        assert deployment["concurrency_limit"]["limit"] == 1 and deployment["schedules"][0]["cron"]
        assert flow.timeout_seconds
    assert deployments["score"]["parameters"]["training_deployment"] == "sae-train-or-update/train-or-update"


@pytest.mark.usefixtures("prefect_harness")
def test_pull_step_failure_is_on_the_flow_run_state(tmp_path, monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows import deploy_steps

    @flow
    def placeholder():
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(placeholder)
        monkeypatch.setenv("PREFECT__FLOW_RUN_ID", str(run.id))
        monkeypatch.setattr(deploy_steps, "installed_project", lambda: tmp_path)
        with pytest.raises(deploy_steps.PullStepError, match="not found"):
            deploy_steps.enter_project(str(tmp_path / "gone"))
        state = client.read_flow_run(run.id).state
    assert state.is_failed() and "gone/flows/lake_pipeline.py not found" in state.message


@pytest.mark.usefixtures("prefect_harness")
def test_scoring_without_champion_fails_or_hands_off(lake_config, monkeypatch):
    from flows import handoff
    from flows.lake_pipeline import score_flow
    from sae_pipeline.registry import RegistryError

    with pytest.raises(RegistryError, match="no champion"):
        score_flow(str(lake_config))
    started = []

    class Run:
        name = "started-run"

    monkeypatch.setattr(
        handoff,
        "run_deployment",
        lambda name, parameters, timeout, poll_interval: started.append((name, timeout)) or Run,
    )
    with pytest.raises(handoff.NoChampionError, match="started training run 'started-run'"):
        score_flow(str(lake_config), on_no_champion="start-training", training_deployment="f/d")
    assert started == [("f/d", 0)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _api(port: int, path: str, body: dict) -> list | dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_round_trip_on_a_local_server(tmp_path):
    """make deploy-local / deploy-smoke / deploy-stop against a fresh server: scoring with no champion hands
    training to the train-or-update deployment on the other pool, waits, scores and publishes its artifacts."""
    home, port = tmp_path / "prefect-home", _free_port()
    config = write_lake_config(tmp_path, days=2, rows_per_day=400, max_steps=100)
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_PORT=str(port))
    local = [sys.executable, str(DEPLOYMENTS / "local.py")]
    started = time.monotonic()
    try:
        up = subprocess.run([*local, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        pids = [int(path.read_text()) for path in home.glob("*.pid")]
        assert len(pids) == 3  # server and one worker per pool

        refused = urllib.request.Request(f"http://127.0.0.1:{port}/api/deployments/name/sae-lake-pipeline/sample")
        deployment = json.loads(urllib.request.urlopen(refused, timeout=10).read())
        with pytest.raises(urllib.error.HTTPError) as bad_mode:
            _api(port, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"mode": "scoring"}})
        assert bad_mode.value.code == 409 and "'scoring' is not one of" in bad_mode.value.read().decode()

        smoke = subprocess.run(
            [*local, "smoke", "sae-score/score", "--param", f"config_path={config}", "--timeout", "240"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert smoke.returncode == 0, (
            smoke.stdout + smoke.stderr + "".join(path.read_text()[-3000:] for path in home.glob("worker-*.log"))
        )
        run_id = re.search(r"\(([0-9a-f-]{36})\): Completed", smoke.stdout).group(1)
        assert "2 partition(s) scored" in smoke.stdout

        scored = pl.scan_parquet(str(tmp_path / "out" / "scored"), hive_partitioning=True).collect()
        assert scored.height > 0 and scored.get_column("anomaly_score").is_not_null().all()
        assert json.loads((tmp_path / "out" / "models" / "aliases.json").read_text())["aliases"]["champion"]
        artifacts = _api(port, "/artifacts/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        assert {a["key"] for a in artifacts} == {"sae-run-summary", "drift-day-2026-11-01", "drift-day-2026-11-02"}
        runs = _api(port, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})
        assert [(r["name"].split()[0], r["state_type"]) for r in runs] == [("train-or-update", "COMPLETED")]
    finally:
        down = subprocess.run([*local, "down"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    print(f"round trip {time.monotonic() - started:.0f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not list(home.glob("*.pid"))
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
