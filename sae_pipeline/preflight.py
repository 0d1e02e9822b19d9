"""Checks and planning that need no orchestration, done before a command starts Prefect.

A mistake in the config, the lake's layout, a `--partitions` value, a column's type or the model should be named in
a second or two, not after a Prefect server has started; and a run with nothing to do should say so and stop. The
flow repeats the planning under its lease (the lake may change in between); what is decided here is only whether
to start it, and what to tell the user.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sae_pipeline import tables
from sae_pipeline.config import PipelineConfig
from sae_pipeline.ledger import Ledger
from sae_pipeline.planning import SelectionError, select_partitions
from sae_pipeline.records import FailedPartition, PartitionRecord, RunKind, ScoringPlan, split_refused

if TYPE_CHECKING:
    from sae_pipeline.updating import TrainingDecision

#: Footers read to find a column problem shared by every partition (spread over the partitions a run would read).
MAX_PARTITIONS_CHECKED = 24


@dataclass
class RunPlan:
    """What a command would do: the training decision (train, run), the scoring plan (score, run), and the
    partitions whose key values were refused (they fail the run, so a run with any is never a no-op)."""

    partitions: list[PartitionRecord]
    refused: list[FailedPartition]
    training: TrainingDecision | None = None
    model_version: str | None = None
    scoring: ScoringPlan | None = None

    @property
    def nothing_to_do(self) -> bool:
        training_idle = self.training is None or self.training.action == "skip"
        scoring_idle = self.scoring is None or not (self.scoring.to_score or self.scoring.removed)
        return training_idle and scoring_idle and not self.refused

    def describe(self) -> str:
        """The sentence a no-op prints, in the words of a run summary."""
        parts = [f"no training ({self.training.reason})"] if self.training is not None else []
        if self.scoring is not None:
            parts.append(f"0 partition(s) scored, {len(self.scoring.up_to_date)} up to date, 0 removed, 0 failed")
        return "; ".join([*parts, "nothing written"])


def check_partition_selection(spec: list[str] | None, names: list[str]) -> None:
    """`--partitions` in command-line terms: each item a partition name or a range FIRST..LAST of names."""
    if spec is None:
        return
    try:
        select_partitions(spec, names)
    except SelectionError as error:
        example = f" (e.g. {names[0]} or {names[0]}..{names[-1]})" if names else ""
        raise SelectionError(f"--partitions: {error}{example}") from None


def check_column_types(config: PipelineConfig, partitions: list[PartitionRecord]) -> None:
    """Raise one `InputSchemaError` when a configured column is missing or of the wrong type in the footers of every
    partition checked: that is a config (or export) mistake, better reported once than once per partition."""
    if not partitions:
        return
    import polars as pl

    from sae_pipeline.schema import InputSchemaError, conform_columns

    source = tables.source_for(config.lake)
    step = max(1, len(partitions) // MAX_PARTITIONS_CHECKED)
    problems: Counter[str] = Counter()
    example: dict[str, str] = {}
    checked = 0
    for record in partitions[::step][:MAX_PARTITIONS_CHECKED]:
        try:
            found = source.read_schema(record)
        except (OSError, ValueError):  # an unreadable file fails its own partition, with its own message
            continue
        if found is None:
            continue
        where, schema = found
        checked += 1
        try:
            conform_columns(pl.from_arrow(schema.empty_table()), config, source=where)
        except InputSchemaError as error:
            problem = str(error).removeprefix(f"{where}: ")
            problems[problem] += 1
            example.setdefault(problem, where)
    shared = [problem for problem, count in problems.items() if count == checked]
    if checked > 1 and shared:  # one broken partition is that partition's failure, reported as such
        raise InputSchemaError(
            f"{shared[0]} in every partition checked ({checked} of {len(partitions)}, e.g. {example[shared[0]]}): "
            "correct the column in the config, or the files"
        )


def plan_command(
    config: PipelineConfig,
    mode: RunKind,
    requested: list[str] | None = None,
    backfill: bool = False,
    rescore_with: str | None = None,
    model: str | None = None,
    retrain: bool = False,
    as_of: int | None = None,
) -> RunPlan:
    """Everything a `run`, `train` or `score` command can check before orchestration, and what it would do (on the
    table as it was at `as_of`, a Delta version or Iceberg snapshot, if given). Raises the same errors the flow
    would (config, lake, selection, schema, model) when they can be known now."""
    records = tables.partition_records(config.lake, as_of)
    usable, refused = split_refused(records)
    plan = RunPlan(partitions=usable, refused=refused)
    check_partition_selection(requested, [record.name for record in usable])
    # The rest needs torch, polars and pandera (a few seconds to import): only once the quick checks above passed.
    from sae_pipeline import pipeline, updating
    from sae_pipeline.registry import ModelRegistry

    reading: set[str] = set()
    if mode != "score":
        registry = ModelRegistry(config.output.models_uri)
        plan.training = updating.decide_training(config, registry, usable, retrain)
        reading.update(plan.training.partitions)
    if mode != "train":
        reference = rescore_with or model
        if reference is not None or plan.training is None or plan.training.action == "skip":
            plan.model_version = pipeline.scoring_model(config, reference).model_version
        plan.scoring = pipeline.plan_scoring(
            config, records, plan.model_version or "", requested, backfill, bool(rescore_with)
        )
        reading.update(plan.scoring.to_score)
    check_column_types(config, [record for record in usable if record.name in reading])
    return plan


def committed_since(config: PipelineConfig, names: list[str], since: dt.datetime) -> set[str]:
    """Which of `names` the ledger shows committed at or after `since` (what an interrupted run finished)."""
    entries = Ledger(config.output.ledger_uri).entries()
    return {name for name in names if name in entries and entries[name].committed_at >= since}
