"""The pipeline's steps as plain functions: what each Prefect task in `flows/` calls.

Each step takes the config and small typed records (`records`: partitions with their URIs and fingerprints,
counts) and returns one; the data itself moves through the lake. That keeps orchestration thin, lets every step be
tested and rerun on its own, and means a step can run on another machine given only the config and the record.

A scoring run streams each raw partition it has to process once, batch by batch, validates it, writes its
quarantined rows, its scored rows and its drift report, and commits a ledger entry last. Outputs (all under
`output.uri`, each a sibling folder so no table holds foreign files): `scored/`, `quarantine/`,
`drift/<partition>/` (with its `anomalies.html`; `drift/index.html` and `drift/anomalies.html` over the lake),
`flagged/` (each partition's flagged rows, which `incidents` groups into the `incidents/`
table), `ledger/`, `models/` (the registry), `runs/<run id>.json`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm.auto import tqdm

from sae_pipeline import context, drift, hive, lease, parquet_io, report_files, storage, tables, volume
from sae_pipeline.config import PipelineConfig
from sae_pipeline.incidents.flagged import FlaggedRows, delete_flagged, flagged_rows, stage_flagged
from sae_pipeline.incidents.page import ANOMALIES_PAGE
from sae_pipeline.ledger import Ledger, LedgerEntry
from sae_pipeline.overlap import BackgroundWriter, Prefetched, TableWriter
from sae_pipeline.planning import compare_with_ledger, select_partitions
from sae_pipeline.records import (
    DriftRequest,
    PartitionRecord,
    PartitionResult,
    PartitionSummary,
    RunKind,
    ScoringModel,
    ScoringPlan,
    split_refused,
)
from sae_pipeline.registry import ModelArtifact, ModelRegistry
from sae_pipeline.schema import (
    QUARANTINE_REASON_COLUMN,
    quarantine_arrow_schema,
    scored_arrow_schema,
    scored_output_check,
    validate_frame,
)
from sae_pipeline.scoring import ScoredBatch, score_frame
from sae_pipeline.tables.keys import partition_values
from sae_pipeline.updating import unknown_model_columns

logger = logging.getLogger(__name__)


def clear_staging(config: PipelineConfig, run_started_at: dt.datetime) -> None:
    """Remove what crashed writers left: staged files on disk, incomplete uploads on S3. Call it while holding the
    run lease, before this run writes. Every upload begun before the run started is aborted, however recent: under
    the lease its writer is dead, or has lost the lease and must not complete over this run's outputs (an age rule
    would let exactly that writer through). A store that refuses to list uploads only costs a warning: the uploads
    stay invisible to readers, and a bucket lifecycle rule can expire them."""
    storage.clear_folder(config.output.staging_uri)
    try:
        aborted = storage.abort_incomplete_uploads(config.output.uri, initiated_before=run_started_at)
    except PermissionError as error:
        logger.warning("incomplete uploads of crashed writers were not cleaned up: %s", error)
        return
    if aborted:
        logger.info("aborted %d incomplete upload(s) of crashed writers under %s", aborted, config.output.uri)


def scoring_model(config: PipelineConfig, model: str | None = None) -> ScoringModel:
    """The model a scoring run uses (`model`: a version, prefix or alias; default the champion), checked against
    the configured columns before any partition is read."""
    registry = ModelRegistry(config.output.models_uri)
    artifact = registry.load(model or ModelRegistry.CHAMPION)
    return ScoringModel(
        model_version=artifact.version,
        model_uri=registry.uri(artifact.version),
        unknown_columns=unknown_model_columns(artifact, config),
    )


def plan_scoring(
    config: PipelineConfig,
    partitions: list[PartitionRecord],
    model_version: str,
    requested: list[str] | None = None,
    backfill: bool = False,
    rescore: bool = False,
) -> ScoringPlan:
    """Which partitions to score and why, which are up to date, which left the lake: the lake's partitions
    compared with the ledger's entries and the request (see `planning`)."""
    partitions, refused = split_refused(partitions)
    refused_names = {failure.partition for failure in refused}  # still in the lake: never "removed"
    selected = select_partitions(requested, [record.name for record in partitions])
    entries = Ledger(config.output.ledger_uri).entries()
    committed = {
        name: (entry.fingerprint, entry.model_version) for name, entry in entries.items() if name not in refused_names
    }
    fingerprints = {record.name: record.fingerprint for record in partitions}
    plan = compare_with_ledger(fingerprints, committed, model_version, selected, backfill, rescore)
    versions = {record.name: record.version for record in partitions if record.version is not None}
    changed = {
        name: f"changed at table version {versions[name]} (scored at {entries[name].table_version})"
        for name, reason in plan.to_score.items()
        if reason == "changed" and name in versions and entries[name].table_version is not None
    }
    return plan.model_copy(update={"to_score": {**plan.to_score, **changed}}) if changed else plan


def remove_partition_outputs(config: PipelineConfig, name: str) -> None:
    """Delete every output of a partition that left the lake, ledger entry last (so a crash retries the removal)."""
    output = config.output
    for table in (output.scored_uri, output.quarantine_uri):
        delete_output_partition(config, table, name)
    hive.delete_partition(output.drift_uri, name)
    delete_flagged(config, name)
    Ledger(output.ledger_uri).remove(name)
    logger.info("%s left the lake: its outputs were removed", name)


def score_partition(
    config: PipelineConfig,
    partition: PartitionRecord,
    model_version: str,
    run_id: str,
    scored_at: dt.datetime,
    reason: str = "new",
    progress: bool = False,
    lease_token: str | None = None,
) -> PartitionResult:
    """Stream one raw partition once, batch by batch: validate, write quarantined and scored rows, accumulate drift;
    then commit the outputs, the drift report and, last, the ledger entry. Memory does not grow with the partition.
    Safe to rerun: every write replaces the partition's previous output. With `lease_token` (the run lease's), each
    commit first confirms that the run still holds the output folder (`lease.confirm_holder`). The first batch is
    read while the model loads."""
    with Prefetched(tables.source_for(config.lake).iter_batches(partition, config.scoring.batch_rows)) as batches:
        artifact = ModelRegistry(config.output.models_uri).load(model_version, with_replay=False)
        accumulator = drift.DriftAccumulator(artifact.metadata.drift_reference, config.drift)
        commit_metadata = {"sae_pipeline.run_id": run_id, "sae_pipeline.model_version": artifact.version}
        writers = PartitionWriters.open(config, partition, commit_metadata)
        try:
            tally = _stream_and_validate(
                config, partition, batches, artifact, scored_at, writers, accumulator, progress
            )
            # The drift report rendered and the flagged rows written while the writers finish the last batch (Arrow
            # writes without the GIL); both are committed after the rows.
            drift_report = _render_drift_report(config, partition.name, artifact, accumulator, tally)
            try:
                writers.flagged = stage_flagged(config, partition.name, tally.flagged.pieces(), tally.rows_valid)
            finally:
                tally.flagged.close()  # the flagged rows' scratch files
            _confirm_lease(config, lease_token, f"{partition.name}: quarantined and scored rows")
        except BaseException:
            writers.abort()
            raise
    outputs = _write_rows(config, partition, writers, tally)
    drift_report.write()
    result = _partition_result(config, partition.name, reason, artifact.version, tally, outputs, drift_report.report)
    _confirm_lease(config, lease_token, f"{partition.name}: ledger entry")
    _commit_to_ledger(config, partition, result, run_id)
    return result


def output_writer(
    config: PipelineConfig, table_uri: str, partition: PartitionRecord, schema: pa.Schema, metadata: dict[str, str]
) -> TableWriter:
    """The writer of one partition of an output table, written on a background thread: a single Parquet file
    (`parquet_io.PartitionWriter`), or one Delta commit replacing the partition with `metadata` in it
    (`tables.delta.DeltaPartitionWriter`), by `output.format`. Every output table is written through here."""
    if config.output.format == "delta":
        # `tables.delta` is imported where it is used, as `tables.source_for` does: deltalake is needed for Delta
        # tables only, so an environment without it (`benchmarks/gpu.py` on a bare GPU image) scores Parquet lakes.
        from sae_pipeline.tables import delta

        key_types = dict(config.lake.partition_keys)
        return BackgroundWriter(delta.DeltaPartitionWriter(table_uri, partition.values, key_types, schema, metadata))
    return BackgroundWriter(parquet_io.PartitionWriter(table_uri, partition.name, config.output.staging_uri, schema))


def delete_output_partition(config: PipelineConfig, table_uri: str, name: str) -> None:
    """Remove one partition of an output table (a folder, or one Delta commit deleting its rows)."""
    if config.output.format == "delta":
        from sae_pipeline.tables import delta

        delta.delete_partition(table_uri, partition_values(name), dict(config.lake.partition_keys))
    else:
        hive.delete_partition(table_uri, name)


def read_output_partition(config: PipelineConfig, table_uri: str, name: str, columns: list[str]) -> pl.DataFrame:
    """`columns` of one partition of an output table."""
    if config.output.format == "delta":
        from sae_pipeline.tables import delta

        return delta.read_partition(table_uri, partition_values(name), columns)
    return parquet_io.read_partition(storage.join_uri(table_uri, name), columns=columns)


def vacuum_output_tables(config: PipelineConfig) -> int:
    """Vacuum the Delta output tables (`output.vacuum_retention_hours`, see `tables.delta.vacuum`); return how many
    files were removed. Nothing to do for Parquet outputs, whose partitions replace their one file."""
    output = config.output
    if output.format != "delta" or output.vacuum_retention_hours is None:
        return 0
    from sae_pipeline.tables import delta

    removed = [
        file
        for table in (output.scored_uri, output.quarantine_uri)
        for file in delta.vacuum(table, output.vacuum_retention_hours)
    ]
    if removed:
        logger.info("vacuum removed %d unreferenced file(s) from the Delta output tables", len(removed))
    return len(removed)


@dataclass
class PartitionWriters:
    """The writers of one partition's quarantined rows and scored rows, and of its flagged rows once they are all
    known (`incidents.flagged.stage_flagged`)."""

    quarantine: TableWriter
    scored: TableWriter
    flagged: parquet_io.PartitionWriter | None = None

    @classmethod
    def open(cls, config: PipelineConfig, partition: PartitionRecord, metadata: dict[str, str]) -> PartitionWriters:
        output = config.output
        return cls(
            quarantine=output_writer(
                config, output.quarantine_uri, partition, quarantine_arrow_schema(config), metadata
            ),
            scored=output_writer(config, output.scored_uri, partition, scored_arrow_schema(config), metadata),
        )

    def abort(self) -> None:
        self.quarantine.abort()
        self.scored.abort()
        if self.flagged is not None:
            self.flagged.abort()


#: The row counts of a scored partition (`PartitionSummary`) and of a run (`RunSummary.totals`).
ROW_COUNTS = ("rows_in", "rows_valid", "rows_quarantined", "rows_scored", "rows_flagged")


@dataclass
class PartitionTally:
    """What streaming one partition counted: rows, quarantined rows per `column: rule`, and the columns of its
    files that the config does not name (left out of the outputs)."""

    rows_in: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    rows_scored: int = 0
    rows_flagged: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)
    #: The flagged rows with their keys (`incidents.flagged`), written with the partition's outputs.
    flagged: FlaggedRows = field(default_factory=FlaggedRows)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ROW_COUNTS}


def _confirm_lease(config: PipelineConfig, lease_token: str | None, what: str) -> None:
    """Before a commit: confirm that the run still holds the output folder (no-op without a lease token)."""
    if lease_token is not None:
        lease.confirm_holder(config.output.lease_uri, lease_token, what)


def _stream_and_validate(
    config: PipelineConfig,
    partition: PartitionRecord,
    batches: Prefetched[tuple[str, pa.RecordBatch]],
    artifact: ModelArtifact,
    scored_at: dt.datetime,
    writers: PartitionWriters,
    accumulator: drift.DriftAccumulator,
    progress: bool,
) -> PartitionTally:
    """Take the partition's batches (the next batch is read while this one is scored); validate each batch,
    hand its quarantined rows and its scored valid rows to the writers, and feed the valid rows to the drift
    accumulator. With context history the valid rows are scored once the whole partition is read (history needs
    them in time order, and the end of the previous partition)."""
    tally = PartitionTally()
    output_columns = set(scored_arrow_schema(config).names)
    bar = {"desc": f"scoring {partition.name}", "unit": "batch", "disable": None if progress else True, "leave": False}
    waiting_for_history = []
    for source, batch in tqdm(batches, **bar):
        tally.ignored.update(set(batch.schema.names) - output_columns)
        outcome = validate_frame(pl.from_arrow(batch), config, source=source)
        writers.quarantine.write(outcome.quarantined.to_arrow())
        for reason_text, count in _reason_counts(outcome.quarantined).items():
            tally.reasons[reason_text] = tally.reasons.get(reason_text, 0) + count
        tally.rows_in += batch.num_rows
        tally.rows_quarantined += outcome.quarantined.height
        if outcome.valid.is_empty():  # every row of this batch was quarantined: nothing to score
            continue
        if config.context.history is not None:
            waiting_for_history.append(outcome.valid)
            continue
        _score_valid(config, partition.name, outcome.valid, artifact, scored_at, writers, accumulator, tally)
    if waiting_for_history:
        valid = context.with_history(config, pl.concat(waiting_for_history), partition)
        for rows in valid.iter_slices(config.scoring.batch_rows):
            _score_valid(config, partition.name, rows, artifact, scored_at, writers, accumulator, tally)
    return tally


def _score_valid(
    config: PipelineConfig,
    partition_name: str,
    valid: pl.DataFrame,
    artifact: ModelArtifact,
    scored_at: dt.datetime,
    writers: PartitionWriters,
    accumulator: drift.DriftAccumulator,
    tally: PartitionTally,
) -> None:
    """Score valid rows, hand them to the scored writer and the drift accumulator, and count them. The output keeps
    the input columns only (recent medians added for history are model inputs, not output)."""
    result = score_frame(valid, artifact, config.scoring.top_features, scored_at)
    scored = result.table.drop_columns(
        [name for name in result.table.column_names if name.endswith(context.RECENT_SUFFIX)]
    )
    if tally.rows_scored == 0:
        scored_output_check(config).validate(pl.from_arrow(scored.slice(0, 1000)))
    writers.scored.write(scored)
    tally.flagged.add(flagged_rows(scored, result.flagged, config, partition_name, tally.rows_valid))
    accumulator.update(
        valid,
        scores=result.scores,
        flagged=result.flagged,
        codes=result.codes,
        groups=_group_batch(artifact, valid, result),
    )
    tally.rows_valid += valid.height
    tally.rows_scored += scored.num_rows
    tally.rows_flagged += int(result.flagged.sum())


def _group_batch(artifact: ModelArtifact, valid: pl.DataFrame, scored: ScoredBatch) -> drift.GroupBatch | None:
    """The batch's rows by context group, for the drift report's per-group rates (None without groups); each row's
    baseline comes from scoring."""
    baselines = artifact.encoder.baselines_
    if baselines is None or scored.baseline is None:
        return None
    nullable = baselines.nullable_columns
    nulls = valid.select([pl.col(c).is_null() for c in nullable]).to_numpy() if nullable else None
    return drift.GroupBatch(
        keys=baselines.group_keys(valid),
        baseline=scored.baseline,
        nullable_columns=nullable,
        nulls=nulls if nulls is not None else np.zeros((valid.height, 0), dtype=bool),
        usual_null_rates=baselines.group_null_rates(scored.groups),
    )


def _write_rows(
    config: PipelineConfig, partition: PartitionRecord, writers: PartitionWriters, tally: PartitionTally
) -> tuple[str, str]:
    """Commit the quarantined rows, then the scored and the flagged rows unless too large a share was quarantined
    (then those are dropped and the partition fails; the quarantined rows are kept, and the next run retries it).
    Return (scored URI, quarantine URI)."""
    if tally.rows_quarantined:
        logger.info("%s: %d row(s) quarantined", partition.name, tally.rows_quarantined)
    quarantine_uri = writers.quarantine.commit()
    too_many = quarantine_share_error(config, partition, tally)
    if too_many is not None:
        writers.scored.abort()
        writers.flagged.abort()
        delete_output_partition(config, config.output.scored_uri, partition.name)
        delete_flagged(config, partition.name)
        raise too_many
    scored_uri = writers.scored.commit()
    writers.flagged.commit()
    return scored_uri, quarantine_uri


def _render_drift_report(
    config: PipelineConfig,
    name: str,
    artifact: ModelArtifact,
    accumulator: drift.DriftAccumulator,
    tally: PartitionTally,
) -> report_files.RenderedReport:
    """The partition's drift report, rendered as `drift/<partition>/report.json`, `report.html` and `report.md`."""
    report = accumulator.report(
        partition=name,
        quarantined_rows=tally.rows_quarantined,
        quarantine_reasons=tally.reasons,
        expected_anomaly_rate=artifact.metadata.target_fpr,
    )
    metadata = artifact.metadata
    reference = drift.describe_reference(artifact.version, metadata.trained_on, metadata.drift_reference["n_rows"])
    report = {**report, "model_version": artifact.version, "reference": reference}
    return report_files.render_report_files(config, name, report)  # validates it first


def _partition_result(
    config: PipelineConfig,
    name: str,
    reason: str,
    model_version: str,
    tally: PartitionTally,
    outputs: tuple[str, str],
    report: dict,
) -> PartitionResult:
    """The scored partition's record: counts, output URIs (`outputs`: scored, quarantine), drift report and the
    drift policy's verdict on it."""
    folder = storage.join_uri(config.output.drift_uri, name)
    wants_training, policy_reason = drift.policy_wants_training(report, config.drift.policy)
    return PartitionResult(
        partition=name,
        reason=reason,
        model_version=model_version,
        **tally.counts(),
        scored_uri=outputs[0],
        quarantine_uri=outputs[1],
        drift_report_uri=storage.join_uri(folder, "report.html"),
        drift_markdown_uri=storage.join_uri(folder, "report.md"),
        drift_status=report["overall_status"],
        drifted_columns=report["drifted_columns"],
        drift_wants_training=wants_training,
        drift_policy_reason=policy_reason,
        ignored_columns=sorted(tally.ignored),
    )


def _commit_to_ledger(config: PipelineConfig, partition: PartitionRecord, result: PartitionResult, run_id: str) -> None:
    """Record the partition as scored: the ledger entry that makes its outputs current (written last)."""
    output = config.output
    Ledger(output.ledger_uri).commit(
        LedgerEntry(
            partition=partition.name,
            fingerprint=partition.fingerprint,
            model_version=result.model_version,
            rows_in=result.rows_in,
            rows_quarantined=result.rows_quarantined,
            rows_scored=result.rows_scored,
            rows_flagged=result.rows_flagged,
            outputs={
                "scored": result.scored_uri,
                "quarantine": result.quarantine_uri,
                "drift": storage.join_uri(output.drift_uri, partition.name),
            },
            run_id=run_id,
            reason=result.reason,
            committed_at=dt.datetime.now(dt.UTC),
            table_version=partition.version,
        )
    )


class QuarantineShareError(ValueError):
    """Too large a share of a partition's rows was quarantined: the partition fails instead of passing as "ok"."""


def quarantine_share_error(
    config: PipelineConfig, partition: PartitionRecord, tally: PartitionTally
) -> QuarantineShareError | None:
    """The error for a partition whose quarantined share reaches `scoring.max_quarantine_share`, else None."""
    limit = config.scoring.max_quarantine_share
    if not tally.rows_in or tally.rows_quarantined / tally.rows_in < limit:
        return None
    top = sorted(tally.reasons.items(), key=lambda item: -item[1])[:3]
    common = ", ".join(f"{reason} ({count})" for reason, count in top)
    return QuarantineShareError(
        f"{partition.uri}: {tally.rows_quarantined} of {tally.rows_in} rows quarantined, at least the "
        f"allowed share {limit:g} (rule: scoring.max_quarantine_share); most common: {common}; quarantined rows are in "
        f"{storage.join_uri(config.output.quarantine_uri, partition.name)}"
    )


def drift_request(scored: Sequence[PartitionResult], kind: RunKind, hand_off: bool = False) -> DriftRequest | None:
    """The scored partitions whose drift report meets `drift.policy` (partition -> why), and what the run does
    about them: a combined run (`run`) learns from them at once; a scoring-only run leaves them to the next
    train-or-update run, and with `hand_off` also starts that run (on the drifted partitions, without waiting)."""
    asking = {result.partition: result.drift_policy_reason for result in scored if result.drift_wants_training}
    if not asking:
        return None
    action = "train-now" if kind == "run" else "hand-off" if hand_off else "record"
    return DriftRequest(partitions=asking, action=action)


def _reason_counts(quarantined: pl.DataFrame) -> dict[str, int]:
    """How many quarantined rows broke each `column: rule`."""
    if not quarantined.height:
        return {}
    counted = quarantined.get_column(QUARANTINE_REASON_COLUMN).explode().value_counts()
    return dict(zip(counted.get_column(QUARANTINE_REASON_COLUMN).to_list(), counted.get_column("count").to_list()))


def write_drift_trend(config: PipelineConfig, freshness: volume.FreshnessVerdict | None = None) -> str:
    """Rewrite the lake-level trend page `drift/index.html` from every partition's `report.json` and the lake's
    freshness (`freshness`: the run's verdict; without one, judged from the ledger's partitions when
    `lake.expected_every` is set); return its URI."""
    reports = [storage.read_json(uri) for uri in storage.list_files(config.output.drift_uri, "report.json")]
    if freshness is None and config.lake.expected_every is not None:
        freshness = volume.check_freshness(config, list(Ledger(config.output.ledger_uri).entries()))
    uri = storage.join_uri(config.output.drift_uri, "index.html")
    links = {"Incidents and anomalous rows": ANOMALIES_PAGE}
    anomalies = "{partition}/" + ANOMALIES_PAGE
    page = drift.render_trend(
        reports,
        links=links,
        anomalies_link=anomalies,
        freshness=freshness.model_dump(mode="json") if freshness is not None else None,
    )
    storage.write_text(uri, page)
    return uri


def read_scored_labels(
    config: PipelineConfig, scored: Sequence[PartitionSummary]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Labels, scores, flags and (with a kind column) anomaly kinds of the scored partitions, if the config names a
    label column (evaluation runs only: it reads those columns back)."""
    label, kind = config.label_column, config.label_kind_column
    if label is None or not scored:
        return None
    wanted = [label, "anomaly_score", "is_anomaly"] + ([kind] if kind else [])
    columns = pl.concat(
        [read_output_partition(config, config.output.scored_uri, record.partition, wanted) for record in scored]
    )
    return (
        columns.get_column(label).fill_null(False).cast(pl.Boolean).to_numpy(),
        columns.get_column("anomaly_score").to_numpy(),
        columns.get_column("is_anomaly").to_numpy(),
        columns.get_column(kind).to_numpy() if kind else None,
    )
