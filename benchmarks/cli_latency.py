"""How long the `sae-pipeline` command takes to answer when there is nothing to do or the input is wrong.

On a copy of the bundled sample lake in a scratch folder: one real run (trains and scores), then, each timed as
the median of `--repeat` tries of the whole command in a fresh process: a no-op rerun, a wrong `lake.uri`, a
`--partitions` value that names no partition, and a mistyped config key. Each must exit as the README says
(0 for the no-op, 2 with one `error:` line for the others) and leave no output folder behind for the wrong lake.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reporting import add_output_options, publish  # noqa: E402


def _timed(command: list[str], env: dict, expected: int) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != expected:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}, expected {expected}:\n{result.stderr}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return seconds, (lines[0] if lines else result.stdout.strip().splitlines()[-1])


def measure(repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sae-cli-latency-") as scratch:
        work = Path(scratch)
        shutil.copytree(ROOT / "sample_data", work / "sample_data")
        config = work / "sample_data" / "telemetry.yaml"
        text = config.read_text()
        (work / "sample_data" / "wrong.yaml").write_text(
            text.replace("uri: ./telemetry", "uri: ./telemetri").replace("../outputs/demo", "../outputs/wrong")
        )
        (work / "sample_data" / "typo.yaml").write_text(text.replace("nullable: true}", "nulable: true}"))
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect")}
        env.pop("PREFECT_API_URL", None)
        cli = [sys.executable, "-m", "flows.cli"]
        first, _ = _timed([*cli, "run", "--config", str(config), "--no-progress"], env, 0)
        cases = {
            "no-op rerun": ([*cli, "run", "--config", str(config), "--no-progress"], 0),
            "wrong lake.uri": ([*cli, "run", "--config", str(work / "sample_data" / "wrong.yaml")], 2),
            "bad --partitions": ([*cli, "score", "--config", str(config), "--partitions", "2026-11-01"], 2),
            "config typo": ([*cli, "run", "--config", str(work / "sample_data" / "typo.yaml")], 2),
        }
        timings = {}
        for name, (command, expected) in cases.items():
            runs = [_timed(command, env, expected) for _ in range(repeat)]
            timings[name] = {"median_seconds": statistics.median(s for s, _ in runs), "says": runs[0][1]}
        timings["wrong lake.uri"]["output_folder_left"] = (work / "outputs" / "wrong").exists()
    return {"first_run_seconds": first, "repeat": repeat, "cases": timings}


def render(result: dict, command: str) -> str:
    lines = [
        "## Command-line latency",
        "",
        f"`{command}`: the sample lake copied to a scratch folder, one real run ({result['first_run_seconds']:.1f} s),"
        f" then each command {result['repeat']} times in a fresh process (median). Targets: a no-op under 5 s, the"
        " three mistakes under 3 s with one `error:` line.",
        "",
        "| command | seconds | what it says |",
        "|---|---:|---|",
    ]
    for name, case in result["cases"].items():
        lines.append(f"| {name} | {case['median_seconds']:.2f} | `{case['says'][:110]}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    add_output_options(parser)
    args = parser.parse_args()
    publish(measure(args.repeat), args, "cli-latency", render)


if __name__ == "__main__":
    main()
