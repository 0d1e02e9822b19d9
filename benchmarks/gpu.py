"""Speed on a CUDA device: SAE training and scoring rows/s, and the pipeline's ratio to a bare pyarrow copy.

On synthetic low-rank rows (`lake_scale.write_partition`: `--rows` x `--columns` float32, 8 hidden factors plus
noise), best of `--rounds` each:
1. training samples/s of the library's loop (`training.train_sae`: steps x batch / loop seconds, its validation
   checks included) in fp32 and in bf16 autocast, at the default batch size and at 16 times it. The library itself
   trains in bf16 autocast on every CUDA device that supports it (`training.mixed_precision`); here each precision
   is imposed by replacing that choice for the measurement;
2. scoring rows/s of `SAEDetector(device="cuda")` fitted on the pipeline's training sample size: `decision_function`
   and `terms_and_codes` (what the pipeline calls) on all rows, with the kNN density term (its search is exact on
   the GPU, `sae_pipeline.neighbours`) and with `density_weight=0`;
3. the pipeline against a bare pyarrow read + write of the same partition, with the model on the GPU (the config's
   `model: {device: cuda}`): `throughput.run` without its CPU peer scripts.
Prints JSON (torch and CUDA versions, device name, rows, seconds, every number) and rewrites the `## GPU` section of
BENCHMARKS.md. Sized to take an estimated 2-4 minutes on one H200, well inside 8 (it has not run on a GPU yet).

Without a visible CUDA device it stops with one line. `--install-cuda-torch` first replaces a CPU build of torch
(what `make install` puts in .venv) with the CUDA build of the same version from PyTorch's index (`--cuda-build`;
several GB) if an NVIDIA driver is there, and starts again. `--dry-run` runs every step on the CPU at tiny sizes
(4,000 rows, 20 steps, one round) to check the script in seconds: its JSON says `"dry_run": true, "device": "cpu"`
and it writes nothing to BENCHMARKS.md.

    python benchmarks/gpu.py [--rows 1000000] [--columns 32] [--steps 2000] [--rounds 3] [--json PATH]
    python benchmarks/gpu.py --dry-run
    make bench-gpu                          # in .venv, with --install-cuda-torch

A GPU machine without a package index (the H200 lent to some of this project's sessions: its `python3` is Python
3.12 with a CUDA build of torch, numpy, pyarrow, scikit-learn, scipy, safetensors, PyYAML and tqdm, but without
polars, pandera, pydantic, faiss or botocore) gets those as one archive: `make gpu-site`, on a machine with an
index, installs them for Python 3.12 into `.gpu-site/site.tar.xz` (git-ignored; 57 MiB, so that with the checkout it
stays under the 64 MiB that travel to the lent machine; deltalake, 28 MB more, is left out: scoring a Parquet lake
does not import it). Then, on the GPU machine, from the repository root with `.gpu-site` carried along, this one
command measures and brings back the JSON and BENCHMARKS.md with its new section (`$OUT`: the folder whose files
come back):

    python3 -c "import tarfile; tarfile.open('.gpu-site/site.tar.xz').extractall('/tmp', filter='data')" &&
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --json $OUT/gpu.json && cp BENCHMARKS.md $OUT/
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import throughput  # noqa: E402
from benchmarks.lake_scale import write_partition  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import training  # noqa: E402
from sae_pipeline.config import TrainingConfig  # noqa: E402
from sae_pipeline.detector import SAEDetector  # noqa: E402
from sae_pipeline.detector_settings import DetectorSettings  # noqa: E402

PRECISIONS = ("fp32", "bf16")
#: The default batch size, whose steps are too small to keep a GPU busy, and one 16 times larger.
TRAINING_BATCH_SIZES = (DetectorSettings().batch_size, 16 * DetectorSettings().batch_size)
#: Rows the scoring models are fitted on: the pipeline's default training sample.
SCORING_FIT_ROWS = TrainingConfig().max_rows
#: Rows scored once before timing, so that CUDA's start-up costs stay out of the measurement.
WARM_UP_ROWS = 4_096
DRY_RUN_SIZES = {"rows": 4_000, "steps": 20, "rounds": 1}
PYTORCH_INDEX = "https://download.pytorch.org/whl"


def require_cuda(install: bool, cuda_build: str, argv: list[str]) -> None:
    """Return if torch sees a CUDA device; with `install`, swap a CPU build of torch for the `cuda_build` build of
    the same version and start this script again (without `--install-cuda-torch`, so it cannot loop); else exit
    with one line saying why there is no device."""
    if torch.cuda.is_available():
        return
    driver = shutil.which("nvidia-smi") is not None
    if install and driver and torch.version.cuda is None:
        version = torch.__version__.split("+")[0]
        print(f"installing torch {version}+{cuda_build} from {PYTORCH_INDEX}/{cuda_build} (several GB)", flush=True)
        spec = f"torch=={version}+{cuda_build}"
        pip = [sys.executable, "-m", "pip", "install", spec, "--index-url", f"{PYTORCH_INDEX}/{cuda_build}"]
        if subprocess.run(pip).returncode:
            sys.exit(f"error: pip could not install {spec} (its output is above)")
        rest = [argument for argument in argv if argument != "--install-cuda-torch"]
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *rest])
    if not driver:
        why = "no NVIDIA driver: nvidia-smi is not on the PATH"
    elif torch.version.cuda is None:
        why = "a CPU build of torch: --install-cuda-torch installs the CUDA build of the same version"
    else:
        why = f"a CUDA {torch.version.cuda} build of torch; nvidia-smi tells what the driver sees"
    sys.exit(f"error: no CUDA device is visible to torch {torch.__version__} ({why}); --dry-run checks on the CPU")


def training_precision(precision: str) -> contextlib.AbstractContextManager:
    """Train in `precision` (`fp32` or `bf16` autocast) whatever `training.mixed_precision` would choose."""

    def autocast(device: torch.device) -> contextlib.AbstractContextManager:
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    return mock.patch.object(training, "mixed_precision", autocast)


def training_speed(X: np.ndarray, device: str, steps: int, rounds: int) -> list[dict]:
    """Samples/s of the training loop per precision and batch size, rounds interleaved: every `steps` steps run
    (no early stop), without the isolation forest and the kNN reference, which are not part of the loop."""

    def training_report(precision: str, batch: int, rows: np.ndarray, steps: int) -> dict:
        detector = SAEDetector(
            device=device, batch_size=batch, max_steps=steps, patience=steps, isolation_trim=0, density_weight=0
        )
        with training_precision(precision):
            return detector.fit(rows).training_report_

    cases = [(precision, batch) for precision in PRECISIONS for batch in TRAINING_BATCH_SIZES]
    for case in cases:  # CUDA's start-up costs (context, kernels, workspaces) before any timing
        training_report(*case, X[:WARM_UP_ROWS], steps=10)
    reports = {case: [] for case in cases}
    for _ in range(rounds):
        for case in cases:
            reports[case].append(training_report(*case, X, steps))
    return [
        {
            "precision": precision,
            "batch_size": batch,
            "steps": steps,
            "seconds": [fit["seconds"] for fit in reports[precision, batch]],
            "samples_per_s": max(fit["samples_per_second"] for fit in reports[precision, batch]),
        }
        for precision, batch in cases
    ]


def scoring_speed(X: np.ndarray, model: dict, rounds: int) -> list[dict]:
    """Rows/s of `decision_function` and `terms_and_codes` on all of X, for the default model and the one without
    the kNN density term (`throughput.VARIANTS`), each fitted on the first `SCORING_FIT_ROWS` rows."""
    results = []
    for name, variant in throughput.VARIANTS.items():
        detector = SAEDetector(**model, **variant).fit(X[:SCORING_FIT_ROWS])
        for method in (detector.decision_function, detector.terms_and_codes):
            method(X[:WARM_UP_ROWS])
            seconds = []
            for _ in range(rounds):
                started = time.perf_counter()
                method(X)  # returns numpy arrays: the device has finished when it returns
                seconds.append(time.perf_counter() - started)
            results.append(
                {"call": method.__name__, "model": name, "seconds": seconds, "rows_per_s": len(X) / min(seconds)}
            )
    return results


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with `count` torch threads, then restore the count there was."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(rows: int, columns: int, steps: int, rounds: int, dry_run: bool) -> dict:
    started = time.perf_counter()
    device = torch.device("cpu" if dry_run else "cuda")
    # The pipeline's and the scoring models' settings: the defaults on the GPU; a dry run trains as little as it can.
    model = {"device": device.type, **({"max_steps": steps, "isolation_trim": 0} if dry_run else {})}
    workdir = Path(tempfile.mkdtemp(prefix="sae-gpu-"))
    try:
        X = pl.read_parquet(write_partition(workdir, rows, columns)).to_numpy()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    trained_in_bf16 = isinstance(training.mixed_precision(device), torch.autocast)
    # A dry run checks, it does not measure: on one thread it stays quick on cores busy with other work.
    with torch_threads(1 if dry_run else torch.get_num_threads()):
        return {
            "dry_run": dry_run,
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "rows": rows,
            "columns": columns,
            "rounds": rounds,
            "model": model,
            "library_training_precision": "bf16 autocast" if trained_in_bf16 else "fp32",
            "training": training_speed(X, device.type, steps, rounds),
            "scoring_fit_rows": min(rows, SCORING_FIT_ROWS),
            "scoring": scoring_speed(X, model, rounds),
            "pipeline": throughput.run(rows, columns, rounds, profile=False, model=model, peers=False),
            "seconds": time.perf_counter() - started,
        }


def markdown(result: dict, command: str) -> str:
    pipeline = result["pipeline"]
    best_copy, best_floor = min(pipeline["pyarrow_copy_seconds"]), min(pipeline["scored_io_floor_seconds"])
    training_rows = [
        f"| {case['precision']} | {case['batch_size']:,} | {case['steps']:,} | {case['samples_per_s']:,.0f} |"
        for case in result["training"]
    ]
    scoring_rows = [
        f"| `{case['call']}` | {case['model']} | {min(case['seconds']):.3f} | {case['rows_per_s']:,.0f} |"
        for case in result["scoring"]
    ]
    pipeline_rows = [
        f"| pipeline, {name}: validate, score, write scored + quarantine, drift report | {min(seconds):.2f} | "
        f"{result['rows'] / min(seconds):,.0f} | {best_copy / min(seconds):.3f} |"
        for name, seconds in pipeline["pipeline_seconds"].items()
    ]
    return "\n".join(
        [
            "## GPU",
            "",
            f"`{command}` on {result['device_name']} (torch {result['torch']}, CUDA {result['cuda']}, "
            f"{result['cpu_count']} CPU cores): {result['rows']:,} synthetic rows x {result['columns']} float32 "
            f"columns of low rank; best of {result['rounds']} rounds; {result['seconds']:.0f} s in all.",
            "",
            "Training: samples/s of the library's loop (`train_sae`: steps x batch / loop seconds, validation checks "
            f"included). The library trains in {result['library_training_precision']} on this device.",
            "",
            "| precision | batch | steps | samples/s |",
            "|---|---:|---:|---:|",
            *training_rows,
            "",
            f'Scoring all rows in memory with `SAEDetector(device="cuda")`, fitted on {result["scoring_fit_rows"]:,} '
            "rows; the kNN density term's search is exact on the GPU.",
            "",
            "| call | model | seconds | rows/s |",
            "|---|---|---:|---:|",
            *scoring_rows,
            "",
            "The pipeline with the model on the GPU (`model: {device: cuda}`), as in `throughput.py` without the peer "
            "scripts:",
            "",
            "| what | seconds | rows/s | ratio to the copy |",
            "|---|---:|---:|---:|",
            f"| pyarrow read + write (zstd) | {best_copy:.2f} | {pipeline['pyarrow_copy_rows_per_s']:,.0f} | 1 |",
            f"| pyarrow read + write with the scored contract's columns, nothing computed (the I/O floor) | "
            f"{best_floor:.2f} | {result['rows'] / best_floor:,.0f} | {pipeline['ratio_ceiling']:.3f} |",
            *pipeline_rows,
            "",
            f"**ratio {pipeline['ratio']:.3f}** for the default model (target >= 0.5; the I/O floor caps it at "
            f"{pipeline['ratio_ceiling']:.2f} on this machine).",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2_000, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="every step on the CPU at tiny sizes (4,000 rows, 20 steps, 1 round); BENCHMARKS.md is left alone",
    )
    parser.add_argument(
        "--install-cuda-torch", action="store_true", help="swap a CPU build of torch for the CUDA build of its version"
    )
    parser.add_argument(
        "--cuda-build", default="cu130", help="the CUDA build to install (PyTorch's name; cu130 needs a driver >= 580)"
    )
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.dry_run:
        vars(args).update(DRY_RUN_SIZES, no_markdown=True)
    else:
        require_cuda(args.install_cuda_torch, args.cuda_build, argv)
    result = run(args.rows, args.columns, args.steps, args.rounds, args.dry_run)
    publish(result, args, "gpu", markdown)


if __name__ == "__main__":
    main()
