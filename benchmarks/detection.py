"""Detection benchmark: `SAEDetector` against IsolationForest, kNN and PyOD baselines on real labelled data.

Three protocols (`--protocol`, default all three; every method sees exactly the same training and test rows):

- `contaminated` (ADBench's unsupervised protocol): ADBench sets are split 70/30 (stratified,
  `train_test_split(stratify=y, random_state=seed)`), fitted without labels on the 70%, which keeps its anomalies at
  their natural rate (up to 35%), and scored on the 30%. SMD fits its own `train/` and scores `test/`; NSL-KDD fits
  `KDDTrain+_20Percent` with attacks subsampled (seeded) to 5% and scores all of `KDDTest+`.
- `clean` (ADBench's semi-supervised protocol): a seeded half of the normal rows trains; the other half plus every
  anomaly is the test set. For SMD the labelled pool is `test/` (its `train/` has no labels); NSL-KDD trains on the
  normal rows of `KDDTrain+_20Percent` and scores `KDDTest+`.
- `lake`: `clean`, plus anomalies drawn from a seeded half of the anomalies until they are `--train-contamination`
  (default 0.02) of the training rows; the other half of the anomalies are test rows (NSL-KDD: attacks at that share).

Columns of NSL-KDD go through the pipeline's `TabularEncoder` (3 one-hot categoricals); every method gets the same
encoded matrix. Training sets above `--max-rows` rows and test sets above `--max-test-rows` (default 100,000 each)
are subsampled (seeded, test rows stratified by label, the same rows for every method), because PyOD's AutoEncoder
(training) and kNN (scoring) are too slow on the 300k-600k-row sets otherwise; such datasets are marked †.

Methods: `SAEDetector()` with its defaults (or `--sae-params`), `IsolationForest(n_estimators=100)`, PyOD's `KNN`
with its defaults (k=5, distance to the 5th neighbour) on columns standardised with the training rows' mean and
std, and PyOD's `ECOD` and `AutoEncoder` with their defaults (PyOD's `PCA` on request); every seeded method gets
`random_state=seed`. The "best peer" of a set is the better of IForest and kNN there. PyOD is optional (the
`bench` extra): without it those methods are skipped with a note. PyOD's PCA is kept to the columns and components
with non-zero variance (see `RankSafePCA`), without which it returns NaN on SMD, NSL-KDD and cardio.
torch runs on one thread by default (`--torch-threads`), like the other methods, so that timings do not depend on
what else the machine runs: on a busy 2-core machine two OpenMP threads made the SAE's small matrix products
10-40x slower (on an idle one they are about 1.5x faster).

Metrics are AUC-ROC and average precision on the test rows, averaged over the seeds (0, 1, 2 by default), with
fit and score wall-clock seconds. Training throughput is samples pushed through the optimiser per fit second:
steps x batch size for the SAE, training rows x epochs for PyOD's AutoEncoder. A timing probe fits the SAE (with
the run's parameters) on 100,000 x 30 correlated Gaussian rows. A crash in one cell is recorded as an error string
and the run continues; crashes are listed at the end and make the exit status 1. Results go to one JSON file per
protocol and to one Markdown section of BENCHMARKS.md per protocol, between `<!-- detection-PROTOCOL:start -->`
and `<!-- detection-PROTOCOL:end -->`.

    python benchmarks/detection.py                                   # everything, defaults
    python benchmarks/detection.py --protocol clean --datasets cardio smd --seeds 0 --methods sae iforest knn
    python benchmarks/detection.py --sae-params '{"sparsity": "l1"}' --output /tmp/l1.json --no-markdown
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gzip
import json
import os
import platform
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import sklearn
import torch
from scipy.stats import rankdata
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

import sae_pipeline
from sae_pipeline import SAEDetector
from sae_pipeline.config import ColumnSpec
from sae_pipeline.features import TabularEncoder

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.reporting import BENCHMARKS_MD, update_section  # noqa: E402
from benchmarks.selection import (  # noqa: E402
    NEAR,
    PLANTED_FLOOR,
    PLANTED_SHARES,
    leave_sets_out,
    planted_cluster_aucs,
    risk,
)

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
DEFAULT_OUTPUT = PROJECT_ROOT / "benchmarks" / "results" / "detection.json"  # -> detection-PROTOCOL.json
PEERS = ("IForest", "kNN", "ECOD", "AutoEncoder")  # those that ran; "best peer" is the best of them
DEFAULT_CANDIDATES = PROJECT_ROOT / "benchmarks" / "candidates.json"
GROUPS = ("adbench", "smd", "nsl_kdd")
NSL_KDD_ATTACK_SHARE = 0.05
NSL_KDD_CATEGORICALS = ("protocol_type", "service", "flag")
TIE = 0.005  # |AUC difference| below this counts as a tie
PROBE_ROWS, PROBE_FEATURES = 100_000, 30


# --- data -----------------------------------------------------------------------------------------------------


PROTOCOLS = ("contaminated", "clean", "lake")


@dataclass(frozen=True)
class Protocol:
    """Which rows train: `contaminated` (ADBench's unsupervised split), `clean` or `lake` (see the module doc)."""

    name: str
    train_contamination: float = 0.02


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    capped_from: int | None = None  # training rows before the --max-rows subsample, if one was taken
    train_anomaly_rate: float | None = None  # known share of anomalies in the training rows (None: unknown)
    test_capped_from: int | None = None  # test rows before the --max-test-rows subsample, if one was taken


@dataclass(frozen=True)
class Dataset:
    name: str
    group: str
    load: Callable[[int, Protocol], Split]  # seed, protocol -> split


def cap_rows(split: Split, max_rows: int | None, seed: int, max_test_rows: int | None = None) -> Split:
    """Subsample training rows to `max_rows` and test rows to `max_test_rows` (seeded, order kept).

    The test subsample is stratified by label, so the test anomaly rate is kept.
    """
    rng = np.random.default_rng(seed)
    n = split.X_train.shape[0]
    X_train, capped_from = split.X_train, None
    if max_rows is not None and n > max_rows:
        X_train, capped_from = X_train[np.sort(rng.choice(n, size=max_rows, replace=False))], n
    X_test, y_test, test_capped_from = split.X_test, split.y_test, None
    n_test = X_test.shape[0]
    if max_test_rows is not None and n_test > max_test_rows:
        keep = []
        for label in (0, 1):
            rows = np.flatnonzero(y_test == label)
            keep.append(rng.choice(rows, size=max(1, round(rows.size * max_test_rows / n_test)), replace=False))
        rows = np.sort(np.concatenate(keep))
        X_test, y_test, test_capped_from = X_test[rows], y_test[rows], n_test
    return Split(X_train, X_test, y_test, capped_from, split.train_anomaly_rate, test_capped_from)


def split_labelled(X: np.ndarray, y: np.ndarray, seed: int, protocol: Protocol) -> Split:
    """The `clean` and `lake` splits of a labelled pool (X, y).

    clean: a seeded half of the normal rows trains; the other half plus every anomaly is the test set.
    lake: clean, plus anomalies drawn from a seeded half of the anomalies until they are `train_contamination` of
    the training rows (fewer if that half runs out); the other half of the anomalies are test rows.
    """
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(y == 0))
    anomalies = rng.permutation(np.flatnonzero(y == 1))
    train_normal, test_normal = normal[: normal.size // 2], normal[normal.size // 2 :]
    if protocol.name == "clean":
        train, test_anomalies = train_normal, anomalies
    elif protocol.name == "lake":
        drawable, test_anomalies = anomalies[: anomalies.size // 2], anomalies[anomalies.size // 2 :]
        c = protocol.train_contamination
        n_drawn = min(drawable.size, round(c * train_normal.size / (1 - c)))
        train = rng.permutation(np.concatenate([train_normal, drawable[:n_drawn]]))
    else:
        raise ValueError(f"split_labelled handles clean and lake, not {protocol.name!r}")
    test = np.sort(np.concatenate([test_normal, test_anomalies]))
    return Split(X[train], X[test], y[test], train_anomaly_rate=float(y[train].mean()))


@functools.cache
def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(path)
    return data["X"].astype(np.float64), data["y"].astype(int)


def _adbench_split(path: Path, seed: int, protocol: Protocol) -> Split:
    X, y = _npz(path)
    if protocol.name != "contaminated":
        return split_labelled(X, y, seed, protocol)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    return Split(X_train, X_test, y_test, train_anomaly_rate=float(y_train.mean()))


def _read_matrix(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return np.loadtxt(handle, delimiter=",", ndmin=2)


@functools.cache
def smd_split(root: Path, machine: str) -> Split:
    """One SMD machine: its `train/` rows, its `test/` rows and their labels, in time order."""
    return Split(
        _read_matrix(root / "train" / f"{machine}.txt.gz"),
        _read_matrix(root / "test" / f"{machine}.txt.gz"),
        _read_matrix(root / "test_label" / f"{machine}.txt").ravel().astype(int),
    )


def _smd_protocol_split(root: Path, machine: str, seed: int, protocol: Protocol) -> Split:
    """contaminated: the dataset's own train/ -> test/; clean and lake: `split_labelled` on the labelled test/ rows."""
    split = smd_split(root, machine)
    if protocol.name == "contaminated":
        return split
    return split_labelled(split.X_test, split.y_test, seed, protocol)


@functools.cache
def _nsl_kdd_frames(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, list[ColumnSpec]]:
    fields = [
        line.split(",")[0].strip() for line in (root / "Field Names.csv").read_text().splitlines() if line.strip()
    ]
    names = [*fields, "label", "difficulty"]
    columns = [
        ColumnSpec(name=name, type="string", role="categorical")
        if name in NSL_KDD_CATEGORICALS
        else ColumnSpec(name=name, type="float", role="numeric")
        for name in fields
    ]

    def read(file: str) -> pl.DataFrame:
        return pl.read_csv(root / file, has_header=False, new_columns=names, infer_schema_length=None)

    return read("KDDTrain+_20Percent.txt"), read("KDDTest+.txt"), columns


def _nsl_kdd_split(root: Path, seed: int, protocol: Protocol) -> Split:
    """Train on KDDTrain+_20Percent's normal rows plus attacks at the protocol's share, score all of KDDTest+."""
    train, test, columns = _nsl_kdd_frames(root)
    share = {"contaminated": NSL_KDD_ATTACK_SHARE, "clean": 0.0, "lake": protocol.train_contamination}[protocol.name]
    normal = train.filter(pl.col("label") == "normal")
    n_attacks = round(normal.height * share / (1 - share))
    attacks = train.filter(pl.col("label") != "normal").sample(n_attacks, seed=seed)
    train = pl.concat([normal, attacks]).sample(fraction=1.0, shuffle=True, seed=seed)
    encoder = TabularEncoder(columns).fit(train)
    return Split(
        encoder.transform(train).astype(np.float64),
        encoder.transform(test).astype(np.float64),
        (test.get_column("label") != "normal").to_numpy().astype(int),
        train_anomaly_rate=n_attacks / train.height,
    )


def discover_datasets(data_dir: Path) -> list[Dataset]:
    """Every dataset found under `data_dir`, in a fixed order: ADBench by file number, SMD machines, NSL-KDD."""
    datasets = []
    adbench = sorted((data_dir / "adbench").glob("*.npz"), key=lambda p: int(p.stem.split("_")[0]))
    for path in adbench:
        name = re.sub(r"^\d+_", "", path.stem)
        datasets.append(Dataset(name, "adbench", functools.partial(_adbench_split, path)))
    smd = data_dir / "smd"
    for path in sorted((smd / "train").glob("*.txt.gz")):
        machine = path.name.removesuffix(".txt.gz")
        datasets.append(Dataset(f"smd/{machine}", "smd", functools.partial(_smd_protocol_split, smd, machine)))
    if (data_dir / "nsl_kdd" / "KDDTest+.txt").exists():
        datasets.append(Dataset("nsl_kdd", "nsl_kdd", functools.partial(_nsl_kdd_split, data_dir / "nsl_kdd")))
    return datasets


def select_datasets(datasets: list[Dataset], wanted: list[str] | None) -> list[Dataset]:
    """Keep the datasets named in `wanted` (dataset names like `cardio` or `smd/machine-1-2`, or group names)."""
    if not wanted:
        return datasets
    known = {d.name for d in datasets} | set(GROUPS)
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise SystemExit(f"unknown datasets {unknown}; known: {sorted(known)}")
    return [d for d in datasets if d.name in wanted or d.group in wanted]


# --- methods --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """How to build, score and count the training throughput of one detector."""

    name: str
    build: Callable[[int], object]  # seed -> unfitted estimator
    score: Callable[[object, np.ndarray], np.ndarray]  # higher = more anomalous
    train_samples: Callable[[object, int], int | None] = lambda model, n_train: None


def _sae_samples(model: SAEDetector, n_train: int) -> int:
    """Rows pushed through the optimiser: steps x batch size (the batch is the pool size on tiny sets)."""
    report = model.training_report_
    batch = min(model.batch_size, report["train_rows_used"])
    return (report["steps"] + model.finetune_steps) * batch


class RankSafePCA:
    """PyOD's `PCA` with its defaults, kept to the columns and components that carry variance.

    PyOD standardises by each column's training std and weights each component by 1 / its variance, so a constant
    column (every SMD machine has some) or an exact collinearity (cardio, Cardiotocography, one-hot NSL-KDD) turns
    every score into NaN or inf. Constant columns are dropped and `n_components` is the numerical rank of the
    standardised training matrix; on full-rank data this is exactly PyOD's default.
    """

    def __init__(self, random_state: int):
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> RankSafePCA:
        from pyod.models.pca import PCA

        self.keep_ = np.ptp(X, axis=0) > 0
        X = X[:, self.keep_]
        rank = int(np.linalg.matrix_rank((X - X.mean(axis=0)) / X.std(axis=0)))
        self.model_ = PCA(n_components=rank, random_state=self.random_state).fit(X)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(X[:, self.keep_])


def _pyod_pca(seed: int) -> RankSafePCA:
    return RankSafePCA(random_state=seed)


class StandardisedKNN:
    """PyOD's `KNN` with its defaults (k=5, method="largest") on columns standardised with the training rows."""

    def fit(self, X: np.ndarray) -> StandardisedKNN:
        from pyod.models.knn import KNN
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(X)
        self.model_ = KNN().fit(self.scaler_.transform(X))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(self.scaler_.transform(X))


def _pyod_knn(seed: int) -> StandardisedKNN:
    return StandardisedKNN()  # deterministic


def _pyod_ecod(seed: int):
    from pyod.models.ecod import ECOD

    return ECOD()


def _pyod_autoencoder(seed: int):
    from pyod.models.auto_encoder import AutoEncoder

    return AutoEncoder(random_state=seed, verbose=0)  # defaults: 10 epochs, batch 32, hidden [64, 32]


def candidate_name(name: str) -> str:
    """The method name of a candidate SAE setting in results (`SAE[name]`)."""
    return f"SAE[{name}]"


def make_methods(wanted: list[str], sae_params: dict, candidates: dict[str, dict] | None = None) -> list[Method]:
    """The methods to run, in table order, then one SAE per candidate setting (its parameters over `sae_params`);
    PyOD ones are skipped with a note when PyOD is not installed."""

    def decision(model, X):
        return model.decision_function(X)

    methods = {
        "sae": Method("SAE", lambda seed: SAEDetector(**{**sae_params, "random_state": seed}), decision, _sae_samples),
        "iforest": Method(
            "IForest",
            lambda seed: IsolationForest(n_estimators=100, random_state=seed),
            lambda model, X: -model.score_samples(X),
        ),
        "knn": Method("kNN", _pyod_knn, decision),
        "pca": Method("PCA", _pyod_pca, decision),
        "ecod": Method("ECOD", _pyod_ecod, decision),
        "autoencoder": Method(
            "AutoEncoder", _pyod_autoencoder, decision, lambda model, n_train: n_train * model.epoch_num
        ),
    }
    pyod_methods = {"knn", "pca", "ecod", "autoencoder"} & set(wanted)
    if pyod_methods:
        try:
            import pyod  # noqa: F401
        except ImportError:
            print(f"NOTE: pyod is not installed (pip install -e '.[bench]'): skipping {sorted(pyod_methods)}")
            wanted = [name for name in wanted if name not in pyod_methods]
    extra = [
        Method(
            candidate_name(name),
            lambda seed, params=params: SAEDetector(**{**sae_params, **params, "random_state": seed}),
            decision,
            _sae_samples,
        )
        for name, params in (candidates or {}).items()
    ]
    return [methods[name] for name in wanted] + extra


def run_cell(method: Method, split: Split, seed: int) -> dict:
    """Fit, score and evaluate one method on one split; any exception becomes the cell's `error`."""
    cell = {"n_train": int(split.X_train.shape[0]), "n_features": int(split.X_train.shape[1])}
    try:
        model = method.build(seed)
        started = time.perf_counter()
        model.fit(split.X_train)
        cell["fit_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        scores = np.asarray(method.score(model, split.X_test), dtype=np.float64)
        cell["score_seconds"] = time.perf_counter() - started
        if not np.isfinite(scores).all():
            raise ValueError(f"{int((~np.isfinite(scores)).sum())} non-finite scores")
        cell["auc_roc"] = float(roc_auc_score(split.y_test, scores))
        cell["average_precision"] = float(average_precision_score(split.y_test, scores))
        cell["train_samples"] = method.train_samples(model, cell["n_train"])
        if isinstance(model, SAEDetector):  # the optimisation loop alone, without scaling and scoring the rows
            cell["train_loop_seconds"] = model.training_report_["seconds"]
    except Exception as error:  # noqa: BLE001 - one method's crash must not end the run
        cell["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    return cell


def run_dataset(
    dataset: Dataset,
    methods: list[Method],
    seeds: list[int],
    protocol: Protocol,
    max_rows: int | None,
    max_test_rows: int | None,
) -> tuple[list, dict]:
    """Every method on every seed's split of one dataset: the result cells and a description of the data."""
    cells = []
    for seed in seeds:
        split = cap_rows(dataset.load(seed, protocol), max_rows, seed, max_test_rows)
        for method in methods:
            cell = {"dataset": dataset.name, "group": dataset.group, "method": method.name, "seed": seed}
            cell.update(run_cell(method, split, seed))
            cells.append(cell)
            outcome = (
                f"auc {cell['auc_roc']:.4f} ap {cell['average_precision']:.4f} fit {cell['fit_seconds']:.1f}s"
                if "error" not in cell
                else f"CRASH {cell['error']}"
            )
            print(f"{protocol.name:12s} {dataset.name:24s} seed {seed} {method.name:12s} {outcome}", flush=True)
    info = {
        "name": dataset.name,
        "group": dataset.group,
        "n_train": int(split.X_train.shape[0]),
        "n_features": int(split.X_train.shape[1]),
        "capped_from": split.capped_from,
        "n_test": int(split.X_test.shape[0]),
        "test_capped_from": split.test_capped_from,
        "anomaly_rate": float(split.y_test.mean()),
        "train_anomaly_rate": split.train_anomaly_rate,
    }
    return cells, info


def timing_probe(sae_params: dict) -> dict:
    """Fit seconds of the SAE (with the run's parameters) on 100k x 30 correlated Gaussian rows."""
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(PROBE_ROWS, 5))
    loadings = rng.normal(size=(5, PROBE_FEATURES))
    X = factors @ loadings + 0.5 * rng.normal(size=(PROBE_ROWS, PROBE_FEATURES))
    try:
        model = SAEDetector(**sae_params)
        started = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - started
        return {
            "rows": PROBE_ROWS,
            "features": PROBE_FEATURES,
            "fit_seconds": seconds,
            "steps": model.training_report_["steps"],
            "samples_per_second": _sae_samples(model, 0) / seconds,
            "train_loop_seconds": model.training_report_["seconds"],
        }
    except Exception as error:  # noqa: BLE001 - reported, like a crashed cell
        traceback.print_exc()
        return {"rows": PROBE_ROWS, "features": PROBE_FEATURES, "error": f"{type(error).__name__}: {error}"}


# --- aggregation ----------------------------------------------------------------------------------------------


def summarise(results: list[dict], datasets: list[Dataset], methods: list[str]) -> dict:
    """Per-dataset means over seeds, then means, ranks, SAE-vs-IForest record and training throughput."""
    per_dataset = {}
    for dataset in datasets:
        row = {}
        for method in methods:
            cells = [r for r in results if r["dataset"] == dataset.name and r["method"] == method]
            ok = [c for c in cells if "error" not in c]
            if cells and len(ok) == len(cells):  # a method counts on a dataset only if every seed succeeded
                row[method] = {
                    key: float(np.mean([c[key] for c in ok]))
                    for key in ("auc_roc", "average_precision", "fit_seconds", "score_seconds")
                }
        per_dataset[dataset.name] = row
    complete = [d.name for d in datasets if len(per_dataset[d.name]) == len(methods)]

    def mean_over(names: list[str], method: str, key: str) -> float | None:
        values = [per_dataset[name][method][key] for name in names]
        return float(np.mean(values)) if values else None

    groups = {g: [d.name for d in datasets if d.group == g and d.name in complete] for g in GROUPS}
    ranked = [m for m in methods if not m.startswith(candidate_name(""))]  # candidates are ranked by the selection
    ranks = [rankdata([-per_dataset[name][m]["auc_roc"] for m in ranked]) for name in complete]
    per_method = {
        method: {
            "mean_auc_roc": mean_over(complete, method, "auc_roc"),
            "mean_average_precision": mean_over(complete, method, "average_precision"),
            "mean_rank": float(np.mean([r[ranked.index(method)] for r in ranks]))
            if ranks and method in ranked
            else None,
            **{f"mean_auc_roc_{g}": mean_over(names, method, "auc_roc") for g, names in groups.items() if names},
            **throughput([r for r in results if r["method"] == method and r.get("train_samples")]),
        }
        for method in methods
    }
    summary = {"complete_datasets": complete, "per_dataset": per_dataset, "per_method": per_method}
    peers = [name for name in PEERS if name in methods]
    rows = [row for row in per_dataset.values() if {"SAE", *peers} <= set(row)]
    for key, names in (("sae_vs_best_peer_of_set", peers), ("sae_vs_iforest", ["IForest"])):
        if "SAE" not in methods or not names or not set(names) <= set(methods):
            continue
        diffs = [row["SAE"]["auc_roc"] - max(row[name]["auc_roc"] for name in names) for row in rows]
        summary[key] = {
            "win": sum(d >= TIE for d in diffs),
            "tie": sum(abs(d) < TIE for d in diffs),
            "loss": sum(d <= -TIE for d in diffs),
        }
    if "SAE" in methods and peers and rows:
        summary["risk"] = risk(
            np.array([row["SAE"]["auc_roc"] for row in rows]),
            {name: np.array([row[name]["auc_roc"] for row in rows]) for name in peers},
        )
        best = max(peers, key=lambda name: per_method[name]["mean_auc_roc"])
        summary["best_peer"] = {
            "method": best,
            "mean_auc_roc": per_method[best]["mean_auc_roc"],
            "sae_gap": per_method["SAE"]["mean_auc_roc"] - per_method[best]["mean_auc_roc"],
        }
    if "train_samples_per_second" in per_method.get("SAE", {}) and "train_samples_per_second" in per_method.get(
        "AutoEncoder", {}
    ):
        autoencoder = per_method["AutoEncoder"]["train_samples_per_second"]
        summary["sae_vs_autoencoder_throughput"] = per_method["SAE"]["train_samples_per_second"] / autoencoder
        if "train_loop_samples_per_second" in per_method["SAE"]:
            summary["sae_loop_vs_autoencoder_throughput"] = (
                per_method["SAE"]["train_loop_samples_per_second"] / autoencoder
            )
    return summary


def throughput(cells: list[dict]) -> dict:
    """Training samples per second: all samples pushed through training / all fit seconds (plus the median)."""
    if not cells:
        return {}
    rates = [c["train_samples"] / c["fit_seconds"] for c in cells]
    loop = [c for c in cells if c.get("train_loop_seconds")]
    return {
        **(
            {
                "train_loop_samples_per_second": sum(c["train_samples"] for c in loop)
                / sum(c["train_loop_seconds"] for c in loop)
            }
            if loop
            else {}
        ),
        "train_samples_per_second": sum(c["train_samples"] for c in cells) / sum(c["fit_seconds"] for c in cells),
        "median_train_samples_per_second": float(np.median(rates)),
    }


# --- report ---------------------------------------------------------------------------------------------------


def environment() -> dict:
    try:
        import pyod

        pyod_version = pyod.__version__
    except ImportError:
        pyod_version = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"CUDA {'yes' if torch.cuda.is_available() else 'no'}"
        ),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "sae_pipeline": sae_pipeline.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "scikit-learn": sklearn.__version__,
            "polars": pl.__version__,
            "pyod": pyod_version,
        },
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_markdown(payload: dict, held_out: dict | None = None) -> str:
    """The BENCHMARKS.md section: provenance, per-dataset AUC-ROC table, summary (with the protocol's
    leave-sets-out numbers when given), throughput, probe, crashes."""
    summary = payload["summary"]
    lines = header_lines(payload["meta"]) + dataset_table(payload) + summary_lines(payload)
    if held_out is not None:
        lines += [held_out_line(held_out), ""]
    ratios = summary.get("sae_vs_autoencoder_throughput"), summary.get("sae_loop_vs_autoencoder_throughput")
    lines += (
        throughput_lines(summary["per_method"], *ratios)
        + probe_lines(payload["probe"])
        + crash_lines(payload["results"])
    )
    return "\n".join(lines).rstrip() + "\n"


PROTOCOL_TEXT = {
    "contaminated": (
        "ADBench sets are split 70/30 (stratified, `random_state=seed`) and fitted without labels on the 70%, "
        "anomalies included at their natural rate; SMD fits `train/` and scores `test/`; NSL-KDD fits "
        "KDDTrain+_20Percent with attacks subsampled to 5% and scores KDDTest+."
    ),
    "clean": (
        "a seeded half of the normal rows trains; the other half plus every anomaly is the test set (SMD: the "
        "labelled `test/` rows are the pool; NSL-KDD: the normal rows of KDDTrain+_20Percent train, KDDTest+ is "
        "scored)."
    ),
    "lake": (
        "`clean`, plus anomalies drawn from a seeded half of the anomalies until they are {c:.0%} of the training "
        "rows (fewer where that half runs out: see the train-anomalies column); the other half are test rows "
        "(NSL-KDD: attacks at {c:.0%})."
    ),
}


SELECTED_TEXT = (
    ' The SAE column is the shipped defaults, chosen among candidate settings leave-sets-out (section "leave-sets-out '
    'selection" below, which gives the held-out numbers); the all-sets numbers here are the optimistic ones.'
)


def header_lines(meta: dict) -> list[str]:
    protocol = meta["protocol"]
    caps = f"training rows capped at {meta['max_rows']}, test rows at {meta['max_test_rows']} (marked †)"
    return [
        f"## Detection benchmark: `{protocol}` protocol",
        "",
        f"Generated by `benchmarks/detection.py` on {meta['date']} ({meta['total_seconds'] / 60:.1f} min).  ",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; {meta['platform']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ",
        (
            f"SAE: `--sae-params '{json.dumps(meta['sae_params'])}'` (`{{}}` = `SAEDetector()` defaults); in force: "
            f"`{json.dumps(meta['sae_effective_params'])}`.  "
        ),
        f"Seeds {meta['seeds']}; {caps}, the same rows for every method.",
        "",
        (
            f"Protocol `{protocol}`: " + PROTOCOL_TEXT[protocol].format(c=meta["train_contamination"]) + " "
            "Methods: library defaults (seeded with `random_state=seed`); kNN is PyOD's KNN (k=5, largest) on "
            "standardised columns. Cells are AUC-ROC averaged over seeds; the best per row is bold."
            + (SELECTED_TEXT if meta.get("candidates") else "")
        ),
        "",
    ]


def shown_methods(meta: dict) -> list[str]:
    """The methods of the per-protocol tables: every method but the candidate settings (see the selection)."""
    return [name for name in meta["methods"] if name not in meta.get("candidates", [])]


def dataset_table(payload: dict) -> list[str]:
    methods, per_dataset = shown_methods(payload["meta"]), payload["summary"]["per_dataset"]
    lines = [
        "| dataset | train rows | features | train anomalies | test anomalies | " + " | ".join(methods) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(methods),
    ]
    for info in payload["datasets"]:
        row = per_dataset[info["name"]]
        best = max((row[m]["auc_roc"] for m in methods if m in row), default=None)
        cells = []
        for method in methods:
            value = row.get(method, {}).get("auc_roc")
            text = "crash" if value is None else _fmt(value)
            cells.append(f"**{text}**" if value is not None and value == best else text)
        rows = f"{info['n_train']}{' †' if info['capped_from'] or info.get('test_capped_from') else ''}"
        train_rate = info.get("train_anomaly_rate")
        train_text = "unlabelled" if train_rate is None else f"{train_rate:.1%}"
        cells = [info["name"], rows, str(info["n_features"]), train_text, f"{info['anomaly_rate']:.1%}", *cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_lines(payload: dict) -> list[str]:
    methods, summary = shown_methods(payload["meta"]), payload["summary"]
    per_method, complete = summary["per_method"], summary["complete_datasets"]
    left_out = [info["name"] for info in payload["datasets"] if info["name"] not in complete]
    lines = [
        "",
        f"Summary over the {len(complete)} datasets every method completed"
        + (f" (left out: {', '.join(left_out)})" if left_out else "")
        + ":",
        "",
        "| | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    keys = [
        ("mean AUC-ROC", "mean_auc_roc", 3),
        *[(f"mean AUC-ROC, {group}", f"mean_auc_roc_{group}", 3) for group in GROUPS],
        ("mean average precision", "mean_average_precision", 3),
        ("mean rank (1 = best)", "mean_rank", 2),
    ]
    for label, key, digits in keys:
        if any(key in per_method[m] for m in methods):
            lines.append(f"| {label} | " + " | ".join(_fmt(per_method[m].get(key), digits) for m in methods) + " |")
    fit = [sum(r.get("fit_seconds", 0) for r in payload["results"] if r["method"] == m) for m in methods]
    lines += ["| total fit seconds | " + " | ".join(f"{s:.0f}" for s in fit) + " |", ""]
    if "best_peer" in summary:
        best = summary["best_peer"]
        lines.append(
            f"**SAE mean AUC-ROC {per_method['SAE']['mean_auc_roc']:.3f} vs best peer ({best['method']}) "
            f"{best['mean_auc_roc']:.3f}: {best['sae_gap']:+.3f}.**  "
        )
    peers = [name for name in PEERS if name in methods]
    for key, label in (
        ("sae_vs_best_peer_of_set", f"the best of {', '.join(peers)} on each set"),
        ("sae_vs_iforest", "IForest"),
    ):
        if key in summary:
            record = summary[key]
            lines.append(
                f"SAE vs {label}, per-dataset mean AUC-ROC (tie = |diff| < {TIE}): "
                f"{record['win']} wins, {record['tie']} ties, {record['loss']} losses.  "
            )
    if "risk" in summary:
        lines.append(risk_line(summary["risk"]) + "  ")
    return lines + [""]


def held_out_line(row: dict) -> str:
    """One protocol's leave-sets-out numbers (`selection.leave_sets_out`) in words."""
    best = max(row["peer_mean_auc_roc"], key=row["peer_mean_auc_roc"].get)
    return (
        f"**Leave-sets-out (the defaults on sets they were not chosen on, mean over halvings): SAE "
        f"{row['mean_auc_roc']:.3f} vs best peer ({best}) {row['peer_mean_auc_roc'][best]:.3f}: "
        f"{row['gap_to_best_peer']:+.3f}; worst per-set loss vs IForest {row['worst_loss_vs_iforest']:+.3f}; within "
        f"{NEAR} of the best peer of the set on {row['share_near_best_peer_of_set']:.0%} of the sets.**"
    )


def risk_line(record: dict) -> str:
    """The per-set risk of `selection.risk` in words."""
    return (
        f"Risk: worst per-set loss vs IForest {record.get('worst_loss_vs_iforest', float('nan')):+.3f}, vs the best "
        "peer of "
        f"the set {record['worst_loss_vs_best_peer_of_set']:+.3f}; within {NEAR} of the best peer of the set on "
        f"{record['share_near_best_peer_of_set']:.0%} of the sets."
    )


def throughput_lines(per_method: dict, ratio: float | None = None, loop_ratio: float | None = None) -> list[str]:
    lines = [] if ratio is None else [f"- SAE / AutoEncoder training throughput per fit second: {ratio:.1f}x."]
    if loop_ratio is not None:
        lines.append(
            f"- SAE training loop alone ({per_method['SAE']['train_loop_samples_per_second']:,.0f} samples/s, "
            f"without scaling and scoring the training rows) / AutoEncoder per fit second: {loop_ratio:.1f}x."
        )
    for method, explanation in (
        ("SAE", "optimiser steps x batch size"),
        ("AutoEncoder", "training rows x epochs (PyOD default 10 epochs, batch 32)"),
    ):
        stats = per_method.get(method, {})
        if "train_samples_per_second" in stats:
            lines.append(
                f"- {method} training throughput: {stats['train_samples_per_second']:,.0f} samples/s "
                f"overall (median per fit {stats['median_train_samples_per_second']:,.0f}); samples = "
                f"{explanation}, divided by the wall-clock seconds of `fit`."
            )
    return lines


def probe_lines(probe: dict) -> list[str]:
    if probe.get("skipped"):
        return ["- Timing probe: skipped (--no-probe)."]
    if "error" in probe:
        return [f"- Timing probe CRASHED: {probe['error']}"]
    return [
        (
            f"- Timing probe: `SAEDetector` (run's SAE parameters) fitted {probe['rows']:,} x {probe['features']} "
            f"correlated Gaussian rows in {probe['fit_seconds']:.1f} s ({probe['steps']} steps, "
            f"{probe['samples_per_second']:,.0f} samples/s per fit second"
            + (f"; training loop {probe['train_loop_seconds']:.1f} s" if "train_loop_seconds" in probe else "")
            + ")."
        )
    ]


def crash_lines(results: list[dict]) -> list[str]:
    crashes = [r for r in results if "error" in r]
    if not crashes:
        return ["- Crashes or non-finite scores: none."]
    return ["", f"**{len(crashes)} crashed cells:**", ""] + [
        f"- {r['dataset']} / {r['method']} / seed {r['seed']}: `{r['error']}`" for r in crashes
    ]


def selection_payload(
    payloads: dict[str, dict],
    candidates: dict[str, dict],
    halvings: int,
    planted_gate: Callable[[dict], dict[str, float]] = planted_cluster_aucs,
) -> dict:
    """Leave-sets-out selection among the admissible ones of the defaults and the candidates, from the per-protocol
    results; `planted_gate` gives a setting's AUC-ROC per planted-cluster share."""
    any_payload = next(iter(payloads.values()))
    methods = any_payload["meta"]["methods"]
    auc = {
        protocol: {
            method: {
                name: row[method]["auc_roc"] for name, row in payload["summary"]["per_dataset"].items() if method in row
            }
            for method in methods
        }
        for protocol, payload in payloads.items()
    }
    names = ["SAE", *(candidate_name(name) for name in candidates)]
    settings = {"SAE": {}, **{candidate_name(name): params for name, params in candidates.items()}}
    sae_params = any_payload["meta"]["sae_params"]
    planted = {name: planted_gate({**sae_params, **params}) for name, params in settings.items()}
    admissible = [name for name in names if min(planted[name].values()) >= PLANTED_FLOOR]
    groups = {info["name"]: info["group"] for info in any_payload["datasets"]}
    peers = [name for name in PEERS if name in methods]
    result = leave_sets_out(auc, admissible or names, peers, groups, n_halvings=halvings)
    all_sets = {
        protocol: {name: float(np.mean([auc[protocol][name][d] for d in result["datasets"]])) for name in names + peers}
        for protocol in auc
    }
    return {
        "meta": any_payload["meta"],
        "selected_by": shlex.join(["python", *sys.argv]),
        "selection": result,
        "all_sets_mean_auc_roc": all_sets,
        "settings": settings,
        "planted_cluster_auc_roc": planted,
        "admissible": admissible,
    }


def render_selection(payload: dict) -> str:
    """The BENCHMARKS.md section of the leave-sets-out selection."""
    meta, result, all_sets = payload["meta"], payload["selection"], payload["all_sets_mean_auc_roc"]
    protocols = list(result["protocols"])
    peers = list(next(iter(result["protocols"].values()))["peer_mean_auc_roc"])
    lines = [
        "## Detection benchmark: leave-sets-out selection of the defaults",
        "",
        f"Generated by `benchmarks/detection.py` on {meta['date']} from the runs of the protocol sections above.  ",
        f"Command: `{meta['command']}`; selection computed by `{payload['selected_by']}`  ",
        (
            f"{len(result['datasets'])} datasets in {result['units']} units (each ADBench set and NSL-KDD one unit, "
            f"the SMD machines one unit); {result['n_halvings']} seeded halvings of the units. On each halving the "
            "setting with the best mean AUC-ROC on the selection half (mean over the protocols) is chosen and "
            "scored on the other half only (`benchmarks/selection.py`). The numbers below are means over halvings "
            "of the held-out half: what a default chosen this way gets on datasets it was not chosen on. Only "
            f"admissible settings are chosen among: those that rank a tight cluster of anomalies making "
            f"{', '.join(f'{share:.0%}' for share in PLANTED_SHARES)} of the training rows above fresh normal rows "
            f"with AUC-ROC >= {PLANTED_FLOOR} (`selection.planted_cluster_aucs`, synthetic data; last columns of "
            "the second table)."
        ),
        "",
        "| protocol | SAE, chosen leave-sets-out | " + " | ".join(peers) + " | SAE − best peer | halvings ≥ best peer "
        f"| worst loss vs IForest | worst loss vs best peer of set | sets within {NEAR} of best peer of set |",
        "|---|---:|" + "---:|" * len(peers) + "---:|---:|---:|---:|---:|",
    ]
    for protocol in protocols:
        row = result["protocols"][protocol]
        lines.append(
            f"| {protocol} | **{row['mean_auc_roc']:.3f}** | "
            + " | ".join(f"{row['peer_mean_auc_roc'][p]:.3f}" for p in peers)
            + f" | {row['gap_to_best_peer']:+.3f} | {row['share_of_halvings_at_or_above_best_peer']:.0%} | "
            f"{row['worst_loss_vs_iforest'] or float('nan'):+.3f} | {row['worst_loss_vs_best_peer_of_set']:+.3f} | "
            f"{row['share_near_best_peer_of_set']:.0%} |"
        )
    chosen = ", ".join(f"`{name}` {count}" for name, count in result["chosen"].items())
    lines += [
        "",
        f"Chosen per halving: {chosen}. Chosen on all sets: `{result['chosen_on_all_sets']}` (`SAE` = the shipped "
        "defaults).",
        "",
        "All-sets mean AUC-ROC of every setting (selected and reported on the same sets, so optimistic):",
        "",
        "| setting | parameters | "
        + " | ".join(protocols)
        + " | mean | planted cluster "
        + " / ".join(f"{share:.0%}" for share in PLANTED_SHARES)
        + " | admissible |",
        "|---|---|" + "---:|" * (len(protocols) + 2) + "---|",
    ]
    for name, params in payload["settings"].items():
        values = [all_sets[p][name] for p in protocols]
        planted = " / ".join(f"{auc:.2f}" for auc in payload["planted_cluster_auc_roc"][name].values())
        lines.append(
            f"| `{name}` | `{json.dumps(params)}` | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {np.mean(values):.4f} | {planted} | {'yes' if name in payload['admissible'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def publish_selection(payloads: dict[str, dict], candidates: dict[str, dict], args: argparse.Namespace) -> None:
    """Select, save the selection next to the protocol results and rewrite its section (unless --no-markdown)."""
    payload = selection_payload(payloads, candidates, args.halvings)
    output = output_path(args.output, "selection")
    output.write_text(json.dumps(payload, indent=2))
    section = render_selection(payload)
    print("\n" + section)
    if not args.no_markdown:
        update_section("detection-selection", section)
        for protocol, held_out in payload["selection"]["protocols"].items():
            update_section(f"detection-{protocol}", render_markdown(payloads[protocol], held_out))
    print(f"wrote {output}")


# --- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: ../shared/data")
    parser.add_argument("--datasets", nargs="+", help="dataset or group names (adbench, smd, nsl_kdd); default all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["sae", "iforest", "knn", "ecod", "autoencoder"],
        choices=["sae", "iforest", "knn", "pca", "ecod", "autoencoder"],
    )
    parser.add_argument("--protocol", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS, help="default: all three")
    parser.add_argument(
        "--train-contamination", type=float, default=0.02, help="anomaly share of the lake protocol's training rows"
    )
    parser.add_argument("--max-rows", type=int, default=100_000, help="cap on training rows (0 = no cap)")
    parser.add_argument("--max-test-rows", type=int, default=100_000, help="cap on test rows (0 = no cap)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--sae-params", type=json.loads, default={}, help="JSON of SAEDetector keyword arguments")
    parser.add_argument("--no-markdown", action="store_true", help=f"do not update {BENCHMARKS_MD.name}")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, like the other single-threaded methods; 0 = torch default)",
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the 100k x 30 SAE timing probe")
    parser.add_argument(
        "--selection",
        choices=["none", "leave-sets-out"],
        default="none",
        help="also fit every candidate setting of --candidates and report leave-sets-out selection (selection.py)",
    )
    parser.add_argument(
        "--candidates",
        type=Path,
        default=DEFAULT_CANDIDATES,
        help="JSON object {name: SAEDetector keyword arguments} of the settings to choose among (with the defaults)",
    )
    parser.add_argument("--halvings", type=int, default=50, help="random halvings of the datasets for the selection")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help=f"rewrite the {BENCHMARKS_MD.name} sections from the results saved under --output (and select again with "
        "--selection); fit nothing on the benchmark sets",
    )
    return parser.parse_args(argv)


def sae_effective_params(sae_params: dict) -> dict:
    """Every SAEDetector hyperparameter in force (the library's defaults change; the report must say which ran)."""
    params = SAEDetector(**sae_params).get_params()
    return {name: value for name, value in params.items() if name not in ("random_state", "verbose")}


def write_json(
    path: Path, meta: dict, probe: dict, infos: list[dict], results: list[dict], datasets: list[Dataset], seconds: float
) -> dict:
    """Write everything so far (called after each dataset, so a killed run keeps its finished datasets)."""
    done = [d for d in datasets if any(info["name"] == d.name for info in infos)]
    payload = {
        "meta": {**meta, "total_seconds": seconds},
        "probe": probe,
        "datasets": infos,
        "results": results,
        "summary": summarise(results, done, meta["methods"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return payload


def output_path(output: Path, protocol: str) -> Path:
    """`detection.json` -> `detection-clean.json`: one results file per protocol."""
    return output.with_name(f"{output.stem}-{protocol}{output.suffix}")


def render_saved(args: argparse.Namespace) -> None:
    """Rewrite the protocol sections from the results saved under `--output`; with `--selection leave-sets-out`,
    select again from them (`--candidates` must name the settings those results fitted)."""
    payloads = {}
    for name in args.protocol:
        path = output_path(args.output, name)
        if path.exists():
            payloads[name] = json.loads(path.read_text())
            update_section(f"detection-{name}", render_markdown(payloads[name]))
            print(f"detection-{name}: rendered from {path}")
    if args.selection == "leave-sets-out" and payloads:
        publish_selection(payloads, json.loads(args.candidates.read_text()), args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        render_saved(args)
        return 0
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if not 0 < args.train_contamination < 0.5:
        raise SystemExit(f"--train-contamination must be in (0, 0.5), got {args.train_contamination}")
    max_rows, max_test_rows = args.max_rows or None, args.max_test_rows or None
    datasets = select_datasets(discover_datasets(args.data_dir.resolve()), args.datasets)
    if not datasets:
        raise SystemExit(f"no datasets found under {args.data_dir}")
    candidates = json.loads(args.candidates.read_text()) if args.selection == "leave-sets-out" else {}
    if candidates and "sae" not in args.methods:
        raise SystemExit("--selection leave-sets-out needs the sae method: the defaults are always a candidate")
    methods = make_methods(args.methods, args.sae_params, candidates)
    print(f"{len(datasets)} datasets x {len(methods)} methods x {len(args.seeds)} seeds x protocols {args.protocol}")
    probe = {"skipped": True} if args.no_probe else timing_probe(args.sae_params)
    print(f"timing probe: {probe}", flush=True)
    crashes, payloads = [], {}
    for name in args.protocol:
        started = time.perf_counter()
        protocol = Protocol(name, args.train_contamination)
        meta = {
            "command": shlex.join(["python", *sys.argv]),
            **environment(),
            "protocol": name,
            "train_contamination": args.train_contamination,
            "sae_params": args.sae_params,
            "sae_effective_params": sae_effective_params(args.sae_params),
            "seeds": args.seeds,
            "max_rows": max_rows,
            "max_test_rows": max_test_rows,
            "methods": [m.name for m in methods],
            "candidates": [candidate_name(name) for name in candidates],
            "data_dir": str(args.data_dir.resolve()),
        }
        output = output_path(args.output, name)
        results, infos = [], []
        for dataset in datasets:
            cells, info = run_dataset(dataset, methods, args.seeds, protocol, max_rows, max_test_rows)
            results += cells
            infos.append(info)
            write_json(output, meta, probe, infos, results, datasets, time.perf_counter() - started)
        payload = write_json(output, meta, probe, infos, results, datasets, time.perf_counter() - started)
        section = render_markdown(payload)
        print("\n" + section)
        if not args.no_markdown:
            update_section(f"detection-{name}", section)
            print(f"updated {BENCHMARKS_MD}")
        print(f"wrote {output}")
        crashes += [r for r in results if "error" in r]
        payloads[name] = payload
    if candidates:
        publish_selection(payloads, candidates, args)
    if crashes:
        print(f"\n!!! {len(crashes)} CRASHED CELLS (see the errors above and in the report) !!!", file=sys.stderr)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
