"""The GPU benchmark's dry run checks the whole script on the CPU and records nothing as a GPU measurement
(benchmarks/gpu.py): a lent GPU's minutes must not be spent finding a script error."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.reporting import BENCHMARKS_MD
from tests.conftest import benchmark_module

gpu = benchmark_module("gpu")


def test_dry_run_measures_every_step_on_the_cpu_and_leaves_benchmarks_md_alone(tmp_path):
    before = BENCHMARKS_MD.read_bytes()
    gpu.main(["--dry-run", "--json", str(tmp_path / "gpu.json")])
    result = json.loads((tmp_path / "gpu.json").read_text())

    assert BENCHMARKS_MD.read_bytes() == before
    assert result["dry_run"] is True
    assert result["device"] == "cpu"
    assert result["device_name"] is None
    assert result["rows"] == gpu.DRY_RUN_SIZES["rows"]
    training = {(case["precision"], case["batch_size"]): case["samples_per_s"] for case in result["training"]}
    assert set(training) == {(precision, batch) for precision in gpu.PRECISIONS for batch in gpu.TRAINING_BATCH_SIZES}
    scoring = {(case["call"], case["model"]): case["rows_per_s"] for case in result["scoring"]}
    assert {call for call, _ in scoring} == {"decision_function", "terms_and_codes"}
    assert {model for _, model in scoring} == set(gpu.throughput.VARIANTS)
    pipeline = result["pipeline"]
    speeds = [
        *training.values(),
        *scoring.values(),
        pipeline["pipeline_rows_per_s"],
        pipeline["pyarrow_copy_rows_per_s"],
    ]
    assert all(speed > 0 for speed in speeds)
    assert set(pipeline["ratio_by_variant"]) == set(gpu.throughput.VARIANTS)
    # The section a GPU run writes renders from this result too, so a mistake in it cannot cost a lent GPU's minutes.
    section = gpu.markdown(result, "python benchmarks/gpu.py")
    assert section.startswith("## GPU") and "**ratio" in section
    table_rows = [line for line in section.splitlines() if line.startswith("| ")]
    # three headers; each training and scoring case; the copy, the I/O floor and each pipeline variant
    assert len(table_rows) == 3 + len(training) + len(scoring) + 2 + len(gpu.throughput.VARIANTS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_without_a_cuda_device_it_stops_with_one_line():
    with pytest.raises(SystemExit) as stopped:
        gpu.main([])
    message = str(stopped.value.code)
    assert message.startswith("error: no CUDA device is visible") and "\n" not in message


def test_benchmarks_md_has_the_gpu_section_with_its_command():
    section = BENCHMARKS_MD.read_text().split("<!-- gpu:start -->")[1].split("<!-- gpu:end -->")[0]
    assert section.lstrip().startswith("## GPU")
    assert "python benchmarks/gpu.py" in section
