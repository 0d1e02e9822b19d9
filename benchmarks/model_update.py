"""Is updating the champion worth it on a lake whose normal behaviour shifts gradually?

Generates a sample lake that drifts a little every day (`generate-sample --gradual-shift`), trains a champion on
the first days, then lets the lake grow one day at a time and runs the pipeline's own `train_or_update` after each
day (as a daily job would). The last day is never trained on: on it we compare the first champion, the updated
champion and a model retrained from scratch on every earlier day — false-positive rate on its normal rows, recall
on its injected anomalies — and the cost of an update against a full retrain.

Calibration through updates (`--calibration-seeds N`, 0 to skip): on an unchanged lake and on the shifting lake,
at target false-positive rates of 0.5% and 1%, every version `train_or_update` makes (the first model and each
update, promoted or not) is judged on the day after the newest day it learned from (data like its training data,
never trained on): the share of valid rows and of normal rows it flags, and whether that share lies in the band
its calibration rows guarantee (`sae_pipeline.thresholds.fpr_band` for that many fresh rows); plus the promotions
whose candidate was further from the target than the champion on the held-out rows. Prints JSON; writes a section
of BENCHMARKS.md.

    python benchmarks/model_update.py [--days 14] [--rows-per-day 3000] [--shift 2.0] [--calibration-seeds 3]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from sae_pipeline.sample_data import generate_day, generate_sample_lake  # noqa: E402
from sae_pipeline.schema import validate_frame  # noqa: E402
from sae_pipeline.thresholds import fpr_band  # noqa: E402

#: Target false-positive rates of the calibration runs.
CALIBRATION_TARGETS = (0.005, 0.01)
#: Days the calibration runs' lakes have, and days the first model trains on.
CALIBRATION_DAYS, CALIBRATION_INITIAL_DAYS = 10, 3
#: Fresh rows drawn like a version's newest training day to judge its calibration on.
FRESH_ROWS = 10_000


def _config(workdir: Path, lake_uri: Path, target_fpr: float | None = None, seed: int = 0) -> Path:
    raw = yaml.safe_load((PROJECT_ROOT / "sample_data" / "telemetry.yaml").read_text())
    raw["lake"]["uri"] = str(lake_uri)
    raw["output"]["uri"] = str(workdir / "out")
    raw["training"] = {"partitions": None, "max_rows": 200_000}
    raw["model"]["seed"] = seed
    if target_fpr is not None:
        raw["thresholds"]["target_fpr"] = target_fpr
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _timed_train_or_update(config_path: Path, retrain: bool = False) -> tuple[TrainingOutcome, float]:
    config = load_config(config_path)
    started = time.perf_counter()
    record = updating.train_or_update(config, hive.partition_records(config.lake), retrain=retrain)
    return record, time.perf_counter() - started


def _flagged(artifact, config, frame) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, labelled anomaly) for one model on a frame's valid rows, scored as the pipeline scores them."""
    valid = validate_frame(frame, config, source="judged rows").valid
    encoded = artifact.encoder.encode(valid)
    scores = artifact.detector.decision_function(encoded.matrix, encoded.missing)
    return scores > artifact.detector.threshold_, valid.get_column("label_is_anomaly").to_numpy()


def _rates(artifact, config, frame) -> dict:
    """False-positive rate on normal rows and recall on labelled anomalies of one model on one day's valid rows."""
    flagged, labels = _flagged(artifact, config, frame)
    return {
        "version": artifact.version,
        "false_positive_rate": float(flagged[~labels].mean()),
        "recall": float(flagged[labels].mean()),
    }


def _flags(artifact, config, frame) -> dict:
    """One version's flags on one frame: shares flagged, and whether the share is in its stated band."""
    flagged, labels = _flagged(artifact, config, frame)
    band = fpr_band(artifact.detector.validation_scores_.size, config.thresholds.target_fpr, n_rows=flagged.size)
    return {
        "flagged_rate": float(flagged.mean()),
        "normal_flagged_rate": float(flagged[~labels].mean()),
        "calibration_rows": band.n_calibration,
        "in_band": band.contains(float(flagged.mean())),
    }


def _judged(artifact, config, same_day, next_day) -> dict:
    """`_flags` on fresh rows of its newest training day, and the next day's flagged share."""
    return {
        **_flags(artifact, config, same_day),
        "next_day_flagged_rate": _flags(artifact, config, next_day)["flagged_rate"],
    }


def _further_from_target(record: TrainingOutcome, target: float) -> bool:
    """A promotion whose candidate flagged a share of the held-out rows further from the target than the champion."""
    if not getattr(record, "promoted", False) or not record.champion_metrics:
        return False
    return abs(record.challenger_metrics["flagged_rate"] - target) > abs(
        record.champion_metrics["flagged_rate"] - target
    )


def calibration_run(rows_per_day: int, shift: float, target_fpr: float, seed: int) -> list[dict]:
    """Each version one lake's daily `train_or_update` runs make, judged on the next day (module doc)."""
    workdir = Path(tempfile.mkdtemp(prefix="sae-calibration-bench-"))
    try:
        source = workdir / "all-days"
        generate_sample_lake(
            source, days=CALIBRATION_DAYS, rows_per_day=rows_per_day, seed=seed, drift_days=0, gradual_shift=shift
        )
        day_folders = sorted(path.name for path in source.iterdir())
        config_path = _config(workdir, workdir / "lake", target_fpr, seed)
        config = load_config(config_path)
        registry = ModelRegistry(config.output.models_uri)
        for name in day_folders[: CALIBRATION_INITIAL_DAYS - 1]:
            shutil.copytree(source / name, workdir / "lake" / name)
        versions = []
        for index in range(CALIBRATION_INITIAL_DAYS - 1, len(day_folders) - 1):
            shutil.copytree(source / day_folders[index], workdir / "lake" / day_folders[index])
            record, _ = _timed_train_or_update(config_path)
            next_day = parquet_io.read_partition(str(source / day_folders[index + 1]))
            # The same fleet and day behaviour, another random stream (a day's stream is seeded by its date).
            elsewhen = dt.date.fromisoformat(day_folders[index].removeprefix("day=")) + dt.timedelta(days=3650)
            same_day = generate_day(elsewhen, FRESH_ROWS, seed, drift=shift * index / (CALIBRATION_DAYS - 1))
            versions.append(
                {
                    "action": record.action,
                    "promoted": record.promoted,
                    "promoted_further_from_target": _further_from_target(record, target_fpr),
                    **_judged(registry.load(record.model_version), config, same_day, next_day),
                    "champion": _judged(registry.load(ModelRegistry.CHAMPION), config, same_day, next_day),
                }
            )
        return versions
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _summary(versions: list[dict]) -> dict:
    rates = np.array([v["flagged_rate"] for v in versions])
    return {
        "versions": len(versions),
        "mean_flagged_rate": float(rates.mean()),
        "sd_flagged_rate": float(rates.std()),
        "min_flagged_rate": float(rates.min()),
        "max_flagged_rate": float(rates.max()),
        "mean_normal_flagged_rate": float(np.mean([v["normal_flagged_rate"] for v in versions])),
        "share_in_band": float(np.mean([v["in_band"] for v in versions])),
        "mean_next_day_flagged_rate": float(np.mean([v["next_day_flagged_rate"] for v in versions])),
        "mean_calibration_rows": float(np.mean([v["calibration_rows"] for v in versions])),
    }


def calibration(rows_per_day: int, shift: float, seeds: int) -> list[dict]:
    """Calibration through updates on an unchanged and on the shifting lake, at each of `CALIBRATION_TARGETS`."""
    rows = []
    for lake, lake_shift in (("unchanged", 0.0), ("shifting", shift)):
        for target in CALIBRATION_TARGETS:
            versions = [v for seed in range(seeds) for v in calibration_run(rows_per_day, lake_shift, target, seed)]
            updates = [v for v in versions if v["action"] == "update"]
            rows.append(
                {
                    "lake": lake,
                    "target_fpr": target,
                    "first_models": _summary([v for v in versions if v["action"] == "train"]),
                    "updates": _summary(updates),
                    "champions": _summary([v["champion"] for v in versions]),
                    "promoted": sum(v["promoted"] for v in updates),
                    "promoted_further_from_target": sum(v["promoted_further_from_target"] for v in updates),
                }
            )
    return rows


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
            *_calibration_markdown(result),
        ]
    )


def _calibration_markdown(result: dict) -> list[str]:
    if not result.get("calibration"):
        return []

    def cells(summary: dict) -> str:
        return (
            f"{summary['mean_flagged_rate']:.2%} ± {summary['sd_flagged_rate']:.2%} "
            f"({summary['min_flagged_rate']:.2%}–{summary['max_flagged_rate']:.2%}) | "
            f"{summary['mean_normal_flagged_rate']:.2%} | {summary['share_in_band']:.0%} | "
            f"{summary['mean_next_day_flagged_rate']:.2%} | {summary['mean_calibration_rows']:,.0f}"
        )

    rows = [
        f"| {case['lake']} | {case['target_fpr']:.1%} | {kind} | {case[key]['versions']} | {cells(case[key])} |"
        + (f" {case['promoted']} ({case['promoted_further_from_target']}) |" if key == "updates" else " |")
        for case in result["calibration"]
        for kind, key in (("first model", "first_models"), ("update", "updates"), ("champion", "champions"))
    ]
    return [
        "",
        "### Calibration through updates",
        "",
        f"{result['calibration_seeds']} lakes per case (seeds 0–{result['calibration_seeds'] - 1}), "
        f"{CALIBRATION_DAYS} days x {result['rows_per_day']} rows each, unchanged (no drift at all) or shifting as "
        f"above; a first model on {CALIBRATION_INITIAL_DAYS} days, then `train_or_update` after each new day. Every "
        f"version (and the champion after each run) is judged on {FRESH_ROWS:,} fresh rows drawn like its newest "
        "training day (another random stream; data like its training data): the share of the valid rows it flags "
        "(mean ± sd over versions, min–max), of the normal rows, and how often the share lies in the 95% band "
        "its calibration rows state for that many rows (`fpr_band`); and on the next day of the lake (what a daily "
        "job scores next; on the shifting lake it has moved on). Promoted updates, in brackets those further from "
        "the target than the champion on the held-out rows.",
        "",
        "| lake | target | model | versions | flagged share, fresh rows like the training day | normal rows | "
        "in band | next day | calibration rows | promoted (further) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, default=3000)
    parser.add_argument("--shift", type=float, default=2.0)
    parser.add_argument("--initial-days", type=int, default=5)
    parser.add_argument("--calibration-seeds", type=int, default=3, help="lakes per calibration case (0: skip)")
    add_output_options(parser)
    args = parser.parse_args()
    result = run(args.days, args.rows_per_day, args.shift, args.initial_days)
    if args.calibration_seeds:
        result["calibration_seeds"] = args.calibration_seeds
        result["calibration"] = calibration(args.rows_per_day, args.shift, args.calibration_seeds)
    publish(result, args, "model-update", markdown)


if __name__ == "__main__":
    main()
