"""Scoring throughput against the disk and against the scripts a user would write instead (issue 22).

For each partition size of `--rows` (default 1M, then 60,000 rows: hourly partitions are often small, where fixed
per-partition costs weigh most), in turn: generates one partition of `--columns` float32 columns, trains the default
model and the same model without the kNN density term once each (not timed), then alternates, in the same run,
(a) pyarrow reading the file and writing it back, (b) the same with the scored contract's extra columns appended,
their values made beforehand (the I/O floor: what scoring costs if computing took no time), (c) the pipeline scoring
the partition with each model (raw Parquet in; scored partition with every contract column, quarantine and drift
report out) and (d) the peers. The best of `--rounds` of each is compared. Prints JSON (`partitions`: one result per
size, with `pipeline_rows_per_s`, `pyarrow_copy_rows_per_s`, `ratio_by_variant`, `ratio_ceiling` = copy / floor and
`pipeline_vs_peer`) and rewrites the "Scoring throughput" section of BENCHMARKS.md with issue 22's targets beside
the ratios; `--profile` prints the scoring profile's top lines of the first size instead.

Peers, each fitted beforehand on 10,000 of the partition's rows: a polars read, scikit-learn's IsolationForest
(100 trees) `decision_function`, a polars write of the rows with the score; the same with PyOD's KNN (k=5, on the
pipeline's reference size of 10,000 rows) and with PyOD's AutoEncoder (its defaults). PyOD comes with the `bench`
extra; without it those two are skipped with a note. `--no-peers` leaves all three out.

    python benchmarks/throughput.py [--rows 1000000 60000] [--columns 32] [--rounds 3] [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.lake_scale import prepared_champion, score_once, write_partition  # noqa: E402
from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import parquet_io  # noqa: E402
from sae_pipeline.schema import scored_arrow_schema  # noqa: E402


def pyarrow_copy(source: Path, target: Path) -> float:
    started = time.perf_counter()
    pq.write_table(pq.read_table(source), target, compression="zstd")
    return time.perf_counter() - started


def score_columns_like(rows: int, names: list[str], seed: int = 0) -> dict[str, pa.Array]:
    """The scored contract's extra columns with values as varied as real ones (constants would compress to
    nothing), made before any timing: scores, p-values, flags, three column names per row with their explanations,
    version, timestamp, baseline."""
    rng = np.random.default_rng(seed)
    picks = pa.array(rng.integers(0, len(names), rows * 3))
    offsets = pa.array(np.arange(0, 3 * rows + 1, 3, dtype=np.int32))
    explained = pa.StructArray.from_arrays(
        [
            pa.array(names).take(picks),
            pa.array(rng.normal(size=rows * 3)),
            pa.array(rng.normal(size=rows * 3)),
            pa.nulls(rows * 3, pa.string()),
            pa.nulls(rows * 3, pa.string()),
            pa.array(rng.random(rows * 3).astype(np.float32)),
        ],
        names=["column", "value", "typical", "level", "typical_level", "share"],
    )
    return {
        "anomaly_score": pa.array(rng.gamma(2.0, 1.0, rows)),
        "anomaly_pvalue": pa.array(rng.random(rows)),
        "is_anomaly": pa.array(rng.random(rows) < 0.01),
        "top_features": pa.ListArray.from_arrays(offsets, pa.array(names).take(picks)),
        "model_version": pa.array(["20260101T000000Z-0123abcd"] * rows),
        "scored_at": pa.array(np.full(rows, np.datetime64("2026-01-01T00:00:00", "us")), pa.timestamp("us", "UTC")),
        "explanation": pa.ListArray.from_arrays(offsets, explained),
        "context_baseline": pa.nulls(rows, pa.string()),
    }


def scored_io_floor(source: Path, target: Path, extra: dict[str, pa.Array], schema: pa.Schema) -> float:
    """Read the partition and write it with the scored contract's columns, computing nothing, with the
    pipeline's writer settings (`parquet_io.dictionary_columns`): the I/O any scoring pass does, so
    `copy / floor` bounds the ratio that any amount of faster scoring can reach."""
    started = time.perf_counter()
    table = pq.read_table(source)
    for name, values in extra.items():
        table = table.append_column(name, values)
    table = table.cast(schema)
    pq.write_table(table, target, compression="zstd", use_dictionary=parquet_io.dictionary_columns(table))
    return time.perf_counter() - started


#: Rows the peers are fitted on: the pipeline's kNN reference size (`reference_rows`).
PEER_TRAINING_ROWS = 10_000


def fitted_peers(source: Path, seed: int = 0) -> dict[str, object]:
    """The peer scripts' models, fitted (not timed) on a seeded sample of the partition's rows."""
    from sklearn.ensemble import IsolationForest

    frame = pl.read_parquet(source)
    sample = frame.sample(min(PEER_TRAINING_ROWS, frame.height), seed=seed).to_numpy()
    peers = {"polars + scikit-learn IsolationForest": IsolationForest(n_estimators=100, random_state=seed).fit(sample)}
    try:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.knn import KNN
    except ImportError:
        print("NOTE: pyod is not installed (pip install -e '.[bench]'): skipping the PyOD peers")
        return peers
    peers["polars + PyOD KNN (k=5, 10,000 reference rows)"] = KNN().fit(sample)
    peers["polars + PyOD AutoEncoder"] = AutoEncoder(random_state=seed, verbose=0).fit(sample)
    return peers


def peer_script(model, source: Path, target: Path) -> float:
    """What a user writes instead: read the partition, score every row, write it back with its score."""
    started = time.perf_counter()
    frame = pl.read_parquet(source)
    scores = model.decision_function(frame.to_numpy())
    frame.with_columns(pl.Series("anomaly_score", scores)).write_parquet(target, compression="zstd")
    return time.perf_counter() - started


#: The models compared: the default, and the same without the kNN density term (the fastest scoring).
VARIANTS = {"default model": {}, "`density_weight: 0`": {"density_weight": 0}}


def run(rows: int, columns: int, rounds: int, profile: bool, model: dict, peers: bool = True) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="sae-throughput-"))
    try:
        lake = workdir / "lake"
        source = write_partition(lake / "day=2026-01-01", rows, columns)
        prepared = {
            name: prepared_champion(workdir / f"variant-{index}", lake, columns, {**model, **settings})
            for index, (name, settings) in enumerate(VARIANTS.items())
        }
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(score_once, *prepared["default model"])
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return {}
        config = prepared["default model"][0]
        extra = score_columns_like(rows, [column.name for column in config.columns])
        peer_models = fitted_peers(source) if peers else {}
        copies, floors, scorings = [], [], {name: [] for name in prepared}
        peer_seconds = {name: [] for name in peer_models}
        for _ in range(rounds):
            for name, peer in peer_models.items():
                peer_seconds[name].append(peer_script(peer, source, workdir / "peer.parquet"))
            copies.append(pyarrow_copy(source, workdir / "copy.parquet"))
            floors.append(scored_io_floor(source, workdir / "floor.parquet", extra, scored_arrow_schema(config)))
            for name, (config, partition, version) in prepared.items():
                started = time.perf_counter()
                record = score_once(config, partition, version)
                scorings[name].append(time.perf_counter() - started)
                assert record.rows_scored + record.rows_quarantined == rows
        default = min(scorings["default model"])
        return {
            "rows": rows,
            "columns": columns,
            "file_mb": round(source.stat().st_size / 1e6, 1),
            "torch_threads": torch.get_num_threads(),
            "model": model,
            "pyarrow_copy_seconds": copies,
            "scored_io_floor_seconds": floors,
            "ratio_ceiling": min(copies) / min(floors),
            "pipeline_seconds": scorings,
            "pyarrow_copy_rows_per_s": rows / min(copies),
            "pipeline_rows_per_s": rows / default,
            "ratio": min(copies) / default,
            "ratio_by_variant": {name: min(copies) / min(seconds) for name, seconds in scorings.items()},
            "peer_seconds": peer_seconds,
            "pipeline_vs_peer": {name: min(seconds) / default for name, seconds in peer_seconds.items()},
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


#: Issue 22's targets: the default model's rows/s against each peer script's, and against the pyarrow copy.
TARGETS = {"polars + scikit-learn IsolationForest": 1.0, "PyOD KNN": 2.0, "PyOD AutoEncoder": 2.0}
COPY_TARGETS = {"default model": 0.3, "`density_weight: 0`": 0.5}


def _target_of(peer: str) -> float:
    return next(target for name, target in TARGETS.items() if name in peer)


def partition_table(result: dict) -> list[str]:
    """One partition size: the copy, the I/O floor, the pipeline's variants and the peers, then the ratios."""
    best_copy, best_floor = min(result["pyarrow_copy_seconds"]), min(result["scored_io_floor_seconds"])
    rows = [
        f"| pipeline, {name}: validate, score, write scored + quarantine, drift report | {min(seconds):.2f} | "
        f"{result['rows'] / min(seconds):,.0f} | {best_copy / min(seconds):.3f} (target >= {COPY_TARGETS[name]}) |"
        for name, seconds in result["pipeline_seconds"].items()
    ]
    peers = [
        f"| {name}: read, score, write | {min(seconds):.2f} | {result['rows'] / min(seconds):,.0f} | "
        f"{best_copy / min(seconds):.3f} |"
        for name, seconds in result.get("peer_seconds", {}).items()
    ]
    versus = ", ".join(
        f"{name} **{ratio:.2f}x** (target >= {_target_of(name):g})"
        for name, ratio in result.get("pipeline_vs_peer", {}).items()
    )
    return [
        f"### {result['rows']:,} rows x {result['columns']} float32 columns ({result['file_mb']} MB of Parquet)",
        "",
        "| what | seconds | rows/s | ratio to the copy |",
        "|---|---:|---:|---:|",
        f"| pyarrow read + write (zstd) | {best_copy:.2f} | {result['pyarrow_copy_rows_per_s']:,.0f} | 1 |",
        f"| pyarrow read + write with the scored contract's columns, nothing computed (the I/O floor) | "
        f"{best_floor:.2f} | {result['rows'] / best_floor:,.0f} | {result['ratio_ceiling']:.3f} |",
        *rows,
        *peers,
        "",
        *(
            [
                f"The default model's rows/s relative to each peer (above 1 = the pipeline is faster): {versus}.",
                "",
            ]
            if versus
            else []
        ),
    ]


def markdown(result: dict, command: str) -> str:
    partitions = result["partitions"]
    first = partitions[0]
    return (
        "\n".join(
            [
                "## Scoring throughput",
                "",
                f"`{command}`: each partition size in turn, each model trained beforehand, torch on "
                f"{first['torch_threads']} threads; best of {len(first['pyarrow_copy_seconds'])} interleaved rounds. "
                "Peers are fitted on 10,000 rows of the partition beforehand and write only the rows and their "
                "score: no validation, quarantine, p-values, explanations, drift report or atomic commit.",
                "",
                *[line for result_of_size in partitions for line in partition_table(result_of_size)],
            ]
        ).rstrip()
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 60_000], help="partition sizes, in turn")
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one scoring instead")
    parser.add_argument(
        "--model", type=json.loads, default={}, help="model settings as JSON, e.g. '{\"density_weight\": 0}'"
    )
    parser.add_argument("--no-peers", action="store_true", help="leave out the peer scripts")
    add_output_options(parser)
    args = parser.parse_args()
    if args.profile:
        run(args.rows[0], args.columns, args.rounds, True, args.model)
        return
    sizes = [run(rows, args.columns, args.rounds, False, args.model, peers=not args.no_peers) for rows in args.rows]
    publish({"partitions": sizes}, args, "throughput", markdown)


if __name__ == "__main__":
    main()
