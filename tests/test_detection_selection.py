"""Leave-sets-out selection (benchmarks/selection.py) chooses on some datasets and reports on the others."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_module

selection = benchmark_module("selection")

GROUPS = {**{f"set{i}": "adbench" for i in range(10)}, **{f"smd/m{i}": "smd" for i in range(4)}, "nsl_kdd": "nsl_kdd"}


def test_smd_machines_are_one_unit_and_other_sets_one_each():
    units = selection.selection_units(GROUPS)
    assert len(units) == 12
    assert ("smd/m0", "smd/m1", "smd/m2", "smd/m3") in units
    assert sorted(name for unit in units for name in unit) == sorted(GROUPS)


def test_halvings_split_the_units_into_disjoint_halves_and_are_seeded():
    units = selection.selection_units(GROUPS)
    pairs = selection.halvings(units, 20, seed=3)
    for select, report in pairs:
        assert not set(select) & set(report) and sorted(select + report) == sorted(GROUPS)
        smd_sides = {("smd/m0" in select), ("smd/m3" in select)}
        assert len(smd_sides) == 1  # the machines stay together
    assert pairs == selection.halvings(units, 20, seed=3)
    assert pairs != selection.halvings(units, 20, seed=4)


def overfit_scores() -> dict:
    """`lucky` is best on set0-set4 only and poor elsewhere; `steady` is good everywhere; one peer, IForest."""
    auc = {}
    for protocol in ("clean", "contaminated"):
        auc[protocol] = {
            "steady": dict.fromkeys(GROUPS, 0.80),
            "lucky": {name: 0.95 if name in {f"set{i}" for i in range(5)} else 0.60 for name in GROUPS},
            "IForest": dict.fromkeys(GROUPS, 0.78),
        }
    return auc


def test_reported_numbers_come_from_sets_the_choice_was_not_made_on():
    auc = overfit_scores()
    result = selection.leave_sets_out(auc, ["steady", "lucky"], ["IForest"], GROUPS, n_halvings=40, seed=0)
    # Chosen on all sets, `lucky` would win some halvings; held out, whichever was chosen is judged elsewhere.
    for row in result["protocols"].values():
        assert row["peer_mean_auc_roc"]["IForest"] == pytest.approx(0.78)
        assert row["mean_auc_roc"] < 0.80  # below `steady`: choosing `lucky` on its good half costs on the rest
        assert row["worst_loss_vs_iforest"] == pytest.approx(0.60 - 0.78)
    assert set(result["chosen"]) <= {"steady", "lucky"} and sum(result["chosen"].values()) == 40


def test_a_candidate_better_everywhere_is_always_chosen_and_reported_as_measured():
    auc = overfit_scores()
    for protocol in auc:
        auc[protocol]["best"] = dict.fromkeys(GROUPS, 0.9)
    result = selection.leave_sets_out(auc, ["steady", "lucky", "best"], ["IForest"], GROUPS, n_halvings=10)
    assert result["chosen"] == {"best": 10} and result["chosen_on_all_sets"] == "best"
    row = result["protocols"]["clean"]
    assert row["mean_auc_roc"] == pytest.approx(0.9) and row["gap_to_best_peer"] == pytest.approx(0.12)
    assert row["share_near_best_peer_of_set"] == 1.0 and row["share_of_halvings_at_or_above_best_peer"] == 1.0


def test_risk_names_the_worst_set_and_the_share_near_the_best_peer():
    record = selection.risk(
        np.array([0.9, 0.7, 0.85]), {"IForest": np.array([0.8, 0.9, 0.86]), "kNN": np.array([0.95, 0.6, 0.8])}
    )
    assert record["worst_loss_vs_iforest"] == pytest.approx(-0.2)
    assert record["worst_loss_vs_best_peer_of_set"] == pytest.approx(-0.2)
    assert record["share_near_best_peer_of_set"] == pytest.approx(1 / 3)


def test_datasets_a_method_crashed_on_are_left_out():
    auc = overfit_scores()
    del auc["clean"]["lucky"]["set7"]
    result = selection.leave_sets_out(auc, ["steady", "lucky"], ["IForest"], GROUPS, n_halvings=5)
    assert "set7" not in result["datasets"] and len(result["datasets"]) == len(GROUPS) - 1
