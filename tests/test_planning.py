"""What a run decides to score: new, changed, requested, backfilled, rescored, up to date, removed."""

from __future__ import annotations

import pytest

from sae_pipeline.planning import SelectionError, compare_with_ledger, select_partitions

LAKE = [f"day=2026-11-0{day}" for day in range(1, 6)]


def test_selection_accepts_names_ranges_and_commas():
    assert select_partitions(["day=2026-11-02..day=2026-11-04"], LAKE) == LAKE[1:4]
    assert select_partitions(["day=2026-11-05,day=2026-11-01", "day=2026-11-01"], LAKE) == [LAKE[4], LAKE[0]]
    assert select_partitions(None, LAKE) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["day=2026-12-01"], "not in the lake"),
        (["day=2026-11-04..day=2026-11-02"], "empty"),
        (["day=2026-11-01..day=2027-01-01"], "not in the lake"),
        ([" , "], "empty"),
    ],
)
def test_bad_selections_are_refused_with_the_reason(spec, message):
    with pytest.raises(SelectionError, match=message):
        select_partitions(spec, LAKE)


def test_plan_scores_only_new_and_changed_and_reports_removed():
    lake = {"a": "f1", "b": "f2-new", "c": "f3"}
    committed = {"a": ("f1", "v1"), "b": ("f2", "v1"), "gone": ("f9", "v1")}
    plan = compare_with_ledger(lake, committed, "v1")
    assert plan.to_score == {"b": "changed", "c": "new"}
    assert plan.up_to_date == ["a"]
    assert plan.removed == ["gone"]


def test_plan_nothing_to_do_when_everything_is_committed():
    plan = compare_with_ledger({"a": "f1"}, {"a": ("f1", "v1")}, "v2")
    assert plan.to_score == {} and plan.up_to_date == ["a"] and plan.removed == []


def test_requested_backfill_and_rescore():
    lake = {"a": "f1", "b": "f2"}
    committed = {"a": ("f1", "v1"), "b": ("f2", "v2")}
    assert compare_with_ledger(lake, committed, "v2", requested=["a"]).to_score == {"a": "requested"}
    assert compare_with_ledger(lake, committed, "v2", backfill=True).to_score == {"a": "backfill", "b": "backfill"}
    assert compare_with_ledger(lake, committed, "v2", rescore=True).to_score == {"a": "rescore with v2"}
