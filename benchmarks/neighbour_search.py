"""The kNN density term's search: exact vs the index of k-means cells, on real data; prints JSON.

    .venv/bin/python benchmarks/neighbour_search.py [--datasets donors magic.gamma shuttle smtp] [--data-dir DIR]

For each ADBench set: a seeded half of the rows fits `SAEDetector(max_steps=50)` (only its scaling and kNN
reference matter here), and the other half is searched against the reference: exactly, through the index's wide
probe (a `PROBE_SHARE` of the cells), and narrow (the nearest cell), both as the detector searches it (cell by cell)
and as a one-cell probe of the index (what it did before, for comparison: the same neighbours). Reports microseconds
per row for each and the share of rows whose indexed neighbours are exactly as near as the exact ones (the rest get
slightly farther ones, so a slightly higher score).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import neighbours  # noqa: E402
from sae_pipeline.detector import SAEDetector  # noqa: E402


def timed(search) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    found = search()
    return found, time.perf_counter() - started


def measure(path: Path, n_neighbors: int) -> dict:
    X = np.load(path)["X"].astype(np.float64)
    order = np.random.default_rng(0).permutation(len(X))
    detector = SAEDetector(max_steps=50).fit(X[order[: len(X) // 2]])
    rows, reference, cells = (
        detector._to_tensor(X[order[len(X) // 2 :]]),
        detector.reference_,
        detector.reference_cells_,
    )
    if cells.shape[0] == 0:
        raise SystemExit(
            f"{path.name}: a reference of {reference.shape[0]} rows is searched exactly; pick a larger set"
        )
    exact, exact_s = timed(lambda: neighbours._exact_nearest(rows, reference, n_neighbors, None))
    index = neighbours.cell_index(reference, cells)  # built once per model, as when scoring
    wide, wide_s = timed(lambda: index.nearest(rows, n_neighbors, None, neighbours.wide_probe(cells.shape[0])))
    narrow, narrow_s = timed(lambda: index.home_cell_nearest(rows, n_neighbors, None))
    probed, probe_s = timed(lambda: index.nearest(rows, n_neighbors, None, 1))
    if not torch.equal(narrow.sort(dim=1).values, probed.sort(dim=1).values):
        different = (narrow.sort(dim=1).values != probed.sort(dim=1).values).any(dim=1).float().mean().item()
        print(f"{path.name}: narrow and one-cell probe differ on {different:.4%} of rows (ties)", file=sys.stderr)

    def distance(nearest: torch.Tensor) -> torch.Tensor:
        return (rows.unsqueeze(1) - reference[nearest]).square().sum(dim=(1, 2))

    def as_near(nearest: torch.Tensor) -> float:
        return torch.isclose(distance(nearest), distance(exact), rtol=1e-5, atol=1e-6).float().mean().item()

    return {
        "dataset": path.stem.split("_", 1)[1],
        "rows": rows.shape[0],
        "reference_rows": reference.shape[0],
        "cells": cells.shape[0],
        "exact_us_per_row": 1e6 * exact_s / rows.shape[0],
        "wide_us_per_row": 1e6 * wide_s / rows.shape[0],
        "wide_share_as_near_as_exact": as_near(wide),
        "narrow_us_per_row": 1e6 * narrow_s / rows.shape[0],
        "narrow_share_as_near_as_exact": as_near(narrow),
        "one_cell_probe_us_per_row": 1e6 * probe_s / rows.shape[0],
    }


def render(result: dict, command: str) -> str:
    lines = [
        "## kNN search: exact vs the index of k-means cells",
        "",
        f"`{command}`; probe share {result['probe_share']:.4f} of the cells, {result['n_neighbors']} neighbours, "
        f"{result['torch_threads']} torch threads.",
        "",
        "| set | rows searched | reference rows | cells | exact us/row | wide us/row | wide: rows as near as exact "
        "| narrow us/row | narrow: rows as near as exact | narrow as a one-cell probe of the index, us/row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["datasets"]:
        lines.append(
            f"| {row['dataset']} | {row['rows']:,} | {row['reference_rows']:,} | {row['cells']} | "
            f"{row['exact_us_per_row']:.1f} | {row['wide_us_per_row']:.1f} | "
            f"{row['wide_share_as_near_as_exact']:.2%} | "
            f"{row['narrow_us_per_row']:.1f} | {row['narrow_share_as_near_as_exact']:.2%} | "
            f"{row['one_cell_probe_us_per_row']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["donors", "magic.gamma", "shuttle", "smtp"])
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--n-neighbors", type=int, default=SAEDetector().n_neighbors)
    add_output_options(parser)
    args = parser.parse_args()
    paths = {path.stem.split("_", 1)[1]: path for path in (args.data_dir / "adbench").glob("*.npz")}
    missing = [name for name in args.datasets if name not in paths]
    if missing:
        raise SystemExit(f"not found under {args.data_dir / 'adbench'}: {', '.join(missing)}")
    result = {
        "probe_share": neighbours.PROBE_SHARE,
        "n_neighbors": args.n_neighbors,
        "torch_threads": torch.get_num_threads(),
        "datasets": [measure(paths[name], args.n_neighbors) for name in args.datasets],
    }
    publish(result, args, "neighbour-search", render)


if __name__ == "__main__":
    main()
