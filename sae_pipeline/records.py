"""The records the pipeline's steps hand each other: small, typed, JSON-able, never data.

A flow passes these between its tasks (Prefect hashes and, with result persistence, stores them; each is a few
hundred bytes), and the run summary (`runs.RunSummary`) is made of them. Every record refuses unknown fields, so a
misspelt or forgotten field fails where the record is made, not where it is read.

- `PartitionRecord`: one partition of the input table as discovered (`tables.partition_records`).
- `FailedPartition`: a partition that failed, and why (refused keys, unreadable, invalid, too much quarantined).
- `ScoringModel`: the model a scoring run uses (`pipeline.scoring_model`).
- `ScoringPlan`: what a scoring run has to do (`pipeline.plan_scoring`).
- `PartitionSummary` / `PartitionResult`: one scored partition, as the run summary lists it / as
  `pipeline.score_partition` returns it (with its drift details).
- `TrainingOutcome`: what `updating.train_or_update` did: `TrainingSkipped` or `ModelTrained`.
- `DriftRequest`, `DriftPolicyOutcome`, `DriftHandoff`: which scored partitions the drift policy says should be
  learned from and what this run does about it (`pipeline.drift_request`), what it did, and the training run it
  started elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: What a run does: train-or-update then score (`run`), or only one of them.
RunKind = Literal["run", "train", "score"]


class Record(BaseModel):
    """A record one step hands another: immutable, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PartitionRecord(Record):
    """One partition of the input table: its folder `name` (as spelled on storage, e.g. `day=2026-11-01`), `uri`,
    decoded key `values`, the `fingerprint` of its files, and `previous_uri`, the partition before it in key order
    (where context history continues from). A partition whose key values were refused has an `error` (naming its
    folder) and no fingerprint: nothing reads it. A partition of a Delta or Iceberg table also carries the table
    `version` it was planned at (Delta version, Iceberg snapshot id) and its live data `files` there, so whoever
    reads it, on whichever machine, reads that version."""

    name: str
    uri: str
    values: dict[str, str]
    fingerprint: str | None = None
    error: str | None = None
    previous_uri: str | None = None
    version: int | None = None
    files: list[str] | None = None

    @property
    def refused(self) -> bool:
        return self.error is not None

    def failure(self) -> FailedPartition:
        """This refused partition as a failure of the run."""
        return FailedPartition(partition=self.name, error=self.error or "")


class FailedPartition(Record):
    """A partition that failed (the run's other partitions are committed); the next run retries it."""

    partition: str
    error: str


class ScoringModel(Record):
    """The model a scoring run uses, checked against the configured columns: `unknown_columns` are configured model
    columns it was not trained on (and ignores)."""

    model_version: str
    model_uri: str
    unknown_columns: list[str]


class ScoringPlan(Record):
    """The partitions to score (name -> why), those already up to date, and those that left the lake."""

    to_score: dict[str, str] = {}
    up_to_date: list[str] = []
    removed: list[str] = []


class PartitionSummary(Record):
    """One partition scored by a run, as its run summary lists it."""

    partition: str
    reason: str
    model_version: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    rows_scored: int
    rows_flagged: int
    quarantine_uri: str
    scored_uri: str
    drift_report_uri: str
    drift_status: str
    ignored_columns: list[str] = []


class PartitionResult(PartitionSummary):
    """One partition scored and committed (`pipeline.score_partition`): its summary, plus its drift report in
    Markdown, its drifted columns and the drift policy's verdict on it."""

    drift_markdown_uri: str
    drifted_columns: list[str]
    drift_wants_training: bool
    drift_policy_reason: str

    def summary(self) -> PartitionSummary:
        return PartitionSummary(**{name: getattr(self, name) for name in PartitionSummary.model_fields})


class TrainingSkipped(Record):
    """No new model: nothing new to learn, or too few valid rows to update the champion (which stays; the
    partitions left out are in `skipped_partitions`, present only then)."""

    action: Literal["skip"] = "skip"
    reason: str
    champion: str | None
    skipped_partitions: list[FailedPartition] | None = Field(default=None, exclude_if=lambda value: value is None)


class ModelTrained(Record):
    """A new version, trained from scratch (`train`) or fine-tuned from the champion (`update`), saved, and
    promoted when it is no worse than the champion on the same held-out rows."""

    action: Literal["train", "update"]
    reason: str
    champion: str | None  # before this training
    model_version: str
    model_uri: str
    parent_version: str | None
    trained_on: list[str]
    skipped_partitions: list[FailedPartition]
    training_rows: int
    rows_read: int
    seconds: float
    promoted: bool
    promotion_reason: str
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    retired_versions: list[str]
    threshold: float
    training_report: dict | None
    #: Rows left out of training, the replay sample and the kNN reference because a review confirmed them anomalous.
    rows_excluded_by_review: int = 0


#: What `updating.train_or_update` did, told apart by `action`.
TrainingOutcome = Annotated[TrainingSkipped | ModelTrained, Field(discriminator="action")]


class DriftRequest(Record):
    """Scored partitions whose drift report meets `drift.policy` (name -> why), and what this run does about it:
    train on them now (`train-now`, a combined run), leave them to the next train-or-update run (`record`), or
    also start the training deployment on them without waiting (`hand-off`)."""

    partitions: dict[str, str]
    action: Literal["train-now", "record", "hand-off"]


class DriftPolicyOutcome(Record):
    """What the drift policy asked of a run (partition -> why) and the training a combined run did for it."""

    partitions: dict[str, str]
    training: TrainingOutcome | None = None


class DriftHandoff(Record):
    """The training run a scoring run started on the drifted partitions (`flow_run`), or why it could not
    (`error`: the scores are committed either way)."""

    deployment: str
    partitions: list[str]
    flow_run: str | None = None
    error: str | None = None


def split_refused(partitions: list[PartitionRecord]) -> tuple[list[PartitionRecord], list[FailedPartition]]:
    """(usable partition records, failures of those whose key values were refused)."""
    usable = [record for record in partitions if not record.refused]
    refused = [record.failure() for record in partitions if record.refused]
    return usable, refused


class IncidentCounts(Record):
    """The incidents table after a run (`incidents.write_incidents`): incidents in all, by status, and how many are
    `new` since the table it replaced (of which `new_suppressed` were suppressed by an earlier `normal` verdict)."""

    total: int
    open: int
    closed: int
    suppressed: int
    new: int
    new_suppressed: int
    uri: str
    #: The ids of the new incidents that are open (what `incident.opened` events announce).
    opened: list[str] = []


class StalePartitions(Record):
    """Committed partitions scored by another version than the `champion` (partition -> version), and the command
    that rescores them with it."""

    champion: str
    partitions: dict[str, str]
    command: str
