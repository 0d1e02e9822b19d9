"""Leave-sets-out selection: choose a detector default on some datasets and report it on the others.

A default chosen by comparing means on the same datasets it is then reported on looks better there than it is on
data no one has seen. This module estimates what a selection procedure gets on unseen data instead:

1. The datasets are grouped into units that are held out together: each ADBench set and NSL-KDD is one unit, the
   SMD machines are one unit (eight machines of one service are not eight independent datasets).
2. For each of `n_halvings` seeded random halvings of the units, the candidate with the best selection score on
   the first half is chosen: the mean over protocols of its mean AUC-ROC over that half's datasets (one default
   has to serve every protocol: a lake's history is clean, contaminated or in between).
3. The chosen candidate is then scored on the other half only, against the peers on the same datasets.

Only admissible candidates are chosen among: those that still rank a tight cluster of anomalies above the normal
rows when 1%, 4% or 8% of the training rows belong to it (`planted_cluster_aucs`, on synthetic data). Issue 21
makes that a requirement, and the benchmark means cannot see it: a setting can lead them by a hair while scoring
such a cluster as the most normal rows of all.

Reported per protocol, as means over halvings: the held-out mean AUC-ROC of the chosen candidate and of each peer,
its gap to the best peer by mean, the share of halvings where it is at or above that peer, the worst per-set loss
against IsolationForest and against the best peer of each set, and the share of held-out sets where it is within
`NEAR` of the best peer of the set. Everything here works on the per-dataset mean AUC-ROC that
`benchmarks/detection.py` already computes, so the selection costs no extra fits beyond the candidates' own.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics import roc_auc_score

#: A set counts as "near" the best peer when the SAE is at most this far below it.
NEAR = 0.02
#: Groups whose datasets are held out together.
JOINT_GROUPS = ("smd",)
#: Shares of the training rows that form the planted cluster, and the AUC-ROC an admissible setting reaches on each.
PLANTED_SHARES = (0.01, 0.04, 0.08)
PLANTED_FLOOR = 0.99

# auc[protocol][method][dataset] = mean AUC-ROC over seeds
Scores = dict[str, dict[str, dict[str, float]]]


def planted_cluster(share: float, seed: int = 0, n: int = 3000, d: int = 12):
    """Correlated normal rows whose history holds a tight cluster of anomalies (`share` of the training rows), and
    fresh rows to score: 1,000 normal ones and 50 more from the cluster (labels 1). Returns (history, fresh,
    labels, the cluster's centre)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    centre = 3.0 * np.sign(rng.normal(size=d)) * rng.uniform(0.5, 1.0, d)
    n_cluster = int(share * n)
    history = np.vstack([rng.normal(size=(n - n_cluster, d)) @ mixing, centre + 0.05 * rng.normal(size=(n_cluster, d))])
    fresh = np.vstack([rng.normal(size=(1000, d)) @ mixing, centre + 0.05 * rng.normal(size=(50, d))])
    return history, fresh, np.r_[np.zeros(1000), np.ones(50)], centre


def planted_cluster_aucs(params: dict, shares: tuple[float, ...] = PLANTED_SHARES) -> dict[str, float]:
    """AUC-ROC of `SAEDetector(**params)` on each planted-cluster share (seed 0, 300 steps)."""
    from sae_pipeline import SAEDetector

    aucs = {}
    for share in shares:
        history, fresh, labels, _ = planted_cluster(share)
        detector = SAEDetector(**{**params, "random_state": 0}).fit(history)
        aucs[f"{share:.0%}"] = float(roc_auc_score(labels, detector.decision_function(fresh)))
    return aucs


def selection_units(groups: dict[str, str]) -> list[tuple[str, ...]]:
    """The units held out together: one per dataset, except that every dataset of a `JOINT_GROUPS` group is one.

    `groups` maps dataset name -> group; units come in the order of their first dataset.
    """
    units: dict[str, list[str]] = {}
    for name, group in groups.items():
        units.setdefault(group if group in JOINT_GROUPS else name, []).append(name)
    return [tuple(names) for names in units.values()]


def halvings(units: list[tuple[str, ...]], n_halvings: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Seeded random (selection datasets, report datasets) pairs: half of the units each (the odd one reports)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_halvings):
        order = rng.permutation(len(units))
        half = len(units) // 2
        select = [name for i in order[:half] for name in units[i]]
        report = [name for i in order[half:] for name in units[i]]
        pairs.append((select, report))
    return pairs


def selection_score(auc: Scores, candidate: str, datasets: list[str]) -> float:
    """The mean over protocols of the candidate's mean AUC-ROC over `datasets`."""
    return float(np.mean([np.mean([auc[p][candidate][name] for name in datasets]) for p in auc]))


def choose(auc: Scores, candidates: list[str], datasets: list[str]) -> str:
    """The candidate with the best selection score on `datasets` (the first listed wins a tie)."""
    return max(candidates, key=lambda candidate: selection_score(auc, candidate, datasets))


def usable_datasets(auc: Scores, methods: list[str]) -> list[str]:
    """Datasets every method has a score on, in every protocol (a crashed cell leaves its dataset out)."""
    protocols = list(auc)
    first = auc[protocols[0]][methods[0]]
    return [name for name in first if all(name in auc[p].get(m, {}) for p in protocols for m in methods)]


def risk(sae: np.ndarray, peers: dict[str, np.ndarray]) -> dict:
    """Per-set risk of the SAE against peers on the same datasets (arrays aligned by dataset)."""
    best_per_set = np.max(np.stack(list(peers.values())), axis=0)
    record = {
        "worst_loss_vs_best_peer_of_set": float(np.min(sae - best_per_set)),
        "share_near_best_peer_of_set": float(np.mean(sae >= best_per_set - NEAR)),
    }
    if "IForest" in peers:
        record["worst_loss_vs_iforest"] = float(np.min(sae - peers["IForest"]))
    return record


def leave_sets_out(
    auc: Scores,
    candidates: list[str],
    peers: list[str],
    groups: dict[str, str],
    n_halvings: int = 50,
    seed: int = 0,
) -> dict:
    """Choose among `candidates` on half the units and report on the other half, `n_halvings` times.

    Returns {"datasets", "units", "n_halvings", "chosen": {candidate: times chosen}, "chosen_on_all_sets",
    "protocols": {protocol: {...}}}; see the module doc for the protocol entries.
    """
    datasets = usable_datasets(auc, candidates + peers)
    units = selection_units({name: groups[name] for name in datasets})
    pairs = halvings(units, n_halvings, seed)
    chosen = [choose(auc, candidates, select) for select, _ in pairs]
    protocols = {}
    for protocol, methods in auc.items():
        sae_means, peer_means, gaps, at_or_above, risks = [], {p: [] for p in peers}, [], [], []
        for (_, report), candidate in zip(pairs, chosen, strict=True):
            sae = np.array([methods[candidate][name] for name in report])
            peer_values = {p: np.array([methods[p][name] for name in report]) for p in peers}
            best_peer = max(value.mean() for value in peer_values.values())
            sae_means.append(sae.mean())
            for p, value in peer_values.items():
                peer_means[p].append(value.mean())
            gaps.append(sae.mean() - best_peer)
            at_or_above.append(sae.mean() >= best_peer)
            risks.append(risk(sae, peer_values))
        protocols[protocol] = {
            "mean_auc_roc": float(np.mean(sae_means)),
            "peer_mean_auc_roc": {p: float(np.mean(v)) for p, v in peer_means.items()},
            "gap_to_best_peer": float(np.mean(gaps)),
            "share_of_halvings_at_or_above_best_peer": float(np.mean(at_or_above)),
            "worst_loss_vs_iforest": min(r["worst_loss_vs_iforest"] for r in risks) if "IForest" in peers else None,
            "worst_loss_vs_best_peer_of_set": min(r["worst_loss_vs_best_peer_of_set"] for r in risks),
            "share_near_best_peer_of_set": float(np.mean([r["share_near_best_peer_of_set"] for r in risks])),
        }
    return {
        "datasets": datasets,
        "units": len(units),
        "n_halvings": n_halvings,
        "chosen": dict(Counter(chosen).most_common()),
        "chosen_on_all_sets": choose(auc, candidates, datasets),
        "protocols": protocols,
    }
