"""The scale-out benchmark splits a run's wall time at the flow run's task runs (benchmarks/scale_out.py): the
parts must add up to the wall time, and a scoring task run the server did not record must not pass unnoticed."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import benchmark_module

scale_out = benchmark_module("scale_out")
STARTED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _task(name: str, start_s: float, end_s: float):
    return scale_out.TaskTiming(name, STARTED + dt.timedelta(seconds=start_s), STARTED + dt.timedelta(seconds=end_s))


def test_wall_time_is_split_at_the_plan_and_the_scoring_task_runs():
    tasks = [
        _task("discover-partitions-0", 0.2, 0.4),
        _task("plan-scoring-0", 0.5, 1.0),
        _task("score day=2026-01-01", 4.0, 9.0),
        _task("score day=2026-01-02", 4.5, 10.0),
        _task("check-volume-0", 12.0, 12.5),
    ]

    phases = scale_out.where_time_goes(
        STARTED, STARTED + dt.timedelta(seconds=14), tasks, ["day=2026-01-01", "day=2026-01-02"]
    )

    assert phases == {
        "until_planned_s": 1.0,
        "task_runner_start_s": 3.0,
        "scoring_span_s": 6.0,
        "task_runner_stop_s": 2.0,
        "after_scoring_s": 2.0,
        "partition_seconds_total": 10.5,
        "after_scoring_tasks_s": {"check-volume": 0.5},
    }
    assert sum(phases[name] for name in scale_out.PHASES) == 14.0


def test_a_scoring_task_run_missing_on_the_server_is_an_error():
    tasks = [_task("plan-scoring-0", 0.5, 1.0), _task("score day=2026-01-01", 4.0, 9.0)]

    with pytest.raises(ValueError, match="1 scoring task runs recorded for 2 partitions"):
        scale_out.where_time_goes(STARTED, STARTED, tasks, ["day=2026-01-01", "day=2026-01-02"])
