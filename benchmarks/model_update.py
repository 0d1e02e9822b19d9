"""Is updating the champion worth it on a lake whose normal behaviour shifts gradually?

Generates a sample lake that drifts a little every day (`generate-sample --gradual-shift`), trains a champion on
the first days, then lets the lake grow one day at a time and runs the pipeline's own `train_or_update` after each
day (as a daily job would). The last day is never trained on: on it we compare the first champion, the updated
champion and a model retrained from scratch on every earlier day — false-positive rate on its normal rows, recall
on its injected anomalies — and the cost of an update against a full retrain. Prints JSON; writes a section of
BENCHMARKS.md.

    python benchmarks/model_update.py [--days 14] [--rows-per-day 3000] [--shift 2.0] [--json PATH]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.reporting import add_output_options, publish  # noqa: E402
from sae_pipeline import hive, parquet_io, updating  # noqa: E402
from sae_pipeline.config import load_config  # noqa: E402
from sae_pipeline.records import TrainingOutcome  # noqa: E402
from sae_pipeline.registry import ModelRegistry  # noqa: E402
from sae_pipeline.sample_data import generate_sample_lake  # noqa: E402
from sae_pipeline.schema import validate_frame  # noqa: E402


def _config(workdir: Path, lake_uri: Path) -> Path:
    raw = yaml.safe_load((PROJECT_ROOT / "sample_data" / "telemetry.yaml").read_text())
    raw["lake"]["uri"] = str(lake_uri)
    raw["output"]["uri"] = str(workdir / "out")
    raw["training"] = {"partitions": None, "max_rows": 200_000}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _timed_train_or_update(config_path: Path, retrain: bool = False) -> tuple[TrainingOutcome, float]:
    config = load_config(config_path)
    started = time.perf_counter()
    record = updating.train_or_update(config, hive.partition_records(config.lake), retrain=retrain)
    return record, time.perf_counter() - started


def _rates(artifact, config, frame) -> dict:
    """False-positive rate on normal rows and recall on labelled anomalies of one model on one day's valid rows."""
    valid = validate_frame(frame, config, source="evaluation day").valid
    flagged = artifact.detector.decision_function(artifact.encoder.transform(valid)) > artifact.detector.threshold_
    labels = valid.get_column("label_is_anomaly").to_numpy()
    return {
        "version": artifact.version,
        "false_positive_rate": float(flagged[~labels].mean()),
        "recall": float(flagged[labels].mean()),
    }


def run(days: int, rows_per_day: int, shift: float, initial_days: int) -> dict:
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="sae-update-bench-"))
    try:
        source = workdir / "all-days"
        generate_sample_lake(source, days=days, rows_per_day=rows_per_day, gradual_shift=shift)
        day_folders = sorted(path.name for path in source.iterdir())
        growing = workdir / "lake"
        config_path = _config(workdir, growing)
        config = load_config(config_path)
        registry = ModelRegistry(config.output.models_uri)

        def add_day(name: str) -> None:
            shutil.copytree(source / name, growing / name)

        for name in day_folders[:initial_days]:
            add_day(name)
        first, first_seconds = _timed_train_or_update(config_path)
        updates = []
        for name in day_folders[initial_days:-1]:
            add_day(name)
            record, seconds = _timed_train_or_update(config_path)
            updates.append(
                {
                    "day": name,
                    "action": record.action,
                    "seconds": seconds,
                    "promoted": getattr(record, "promoted", None),
                    "reason": getattr(record, "promotion_reason", record.reason),
                }
            )
        updated_champion = registry.load(ModelRegistry.CHAMPION)
        retrained, retrain_seconds = _timed_train_or_update(config_path, retrain=True)

        evaluation_day = parquet_io.read_partition(str(source / day_folders[-1]))
        models = {
            "first_champion": registry.load(first.model_version),
            "updated_champion": updated_champion,
            "full_retrain": registry.load(retrained.model_version),
        }
        update_seconds = [u["seconds"] for u in updates if u["action"] == "update"]
        return {
            "days": days,
            "rows_per_day": rows_per_day,
            "gradual_shift": shift,
            "initial_days": initial_days,
            "evaluation_day": day_folders[-1],
            "models": {name: _rates(artifact, config, evaluation_day) for name, artifact in models.items()},
            "updates": updates,
            "first_training_seconds": first_seconds,
            "mean_update_seconds": float(np.mean(update_seconds)) if update_seconds else None,
            "full_retrain_seconds": retrain_seconds,
            "update_cost_fraction": float(np.mean(update_seconds) / retrain_seconds) if update_seconds else None,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(result: dict, command: str) -> str:
    rows = [
        f"| {name.replace('_', ' ')} | `{m['version']}` | {m['false_positive_rate']:.2%} | {m['recall']:.2%} |"
        for name, m in result["models"].items()
    ]
    promoted = sum(1 for u in result["updates"] if u["promoted"])
    return "\n".join(
        [
            "## Model updates on a gradually shifting lake",
            "",
            f"`{command}`: {result['days']} days x {result['rows_per_day']} rows, normal behaviour drifting a little "
            f"every day up to {result['gradual_shift']}x the sample lake's drift; a champion trained on the first "
            f"{result['initial_days']} days, then `train_or_update` after each new day ({len(result['updates'])} runs, "
            f"{promoted} promoted). All models are judged on {result['evaluation_day']}, which none was trained on "
            f"(target false-positive rate 1%).",
            "",
            "| model | version | false-positive rate (normal rows) | recall (injected anomalies) |",
            "|---|---|---:|---:|",
            *rows,
            "",
            f"Cost: an update takes {result['mean_update_seconds']:.2f} s on average against "
            f"{result['full_retrain_seconds']:.2f} s for a full retrain on every day "
            f"(**{result['update_cost_fraction']:.0%}** of it; "
            f"first training {result['first_training_seconds']:.2f} s). "
            "Times include reading and validating the partitions each one trains on.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, default=3000)
    parser.add_argument("--shift", type=float, default=2.0)
    parser.add_argument("--initial-days", type=int, default=5)
    add_output_options(parser)
    args = parser.parse_args()
    result = run(args.days, args.rows_per_day, args.shift, args.initial_days)
    publish(result, args, "model-update", markdown)


if __name__ == "__main__":
    main()
