"""Accumulate a partition's drift statistics batch by batch against a stored reference, then report.

    acc = DriftAccumulator(reference, settings)          # settings: the config's `drift` section
    for batch, scores, flagged, codes in batches:
        acc.update(batch, scores, flagged, codes)
    report = acc.report(partition="day=2026-11-09", quarantined_rows=12, expected_anomaly_rate=0.01)

Why this module is thin: it owns only what crosses batches (running counts per column and of the anomaly
scores, flag and latent-usage totals, see :mod:`.counts`) and the assembly of report.json. What each section
says is decided elsewhere, one concept per module: :mod:`.columns` (the registered drift test of each column),
:mod:`.scores` (anomaly-score drift), :mod:`.anomaly_rate`, :mod:`.latents`, :mod:`.quarantine`, and
:mod:`.plots` (the pictures). Counts add up across batches, so any split of a partition into batches gives the
same report as one batch.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sae_pipeline.config import DriftConfig
from sae_pipeline.drift import latents
from sae_pipeline.drift.anomaly_rate import anomaly_rate_section
from sae_pipeline.drift.columns import categorical_column, configured_test, numeric_column
from sae_pipeline.drift.common import fraction, require_columns
from sae_pipeline.drift.counts import NumericCounts, counts_for
from sae_pipeline.drift.groups import GroupBatch, GroupCounts
from sae_pipeline.drift.quarantine import quarantine_section
from sae_pipeline.drift.reference import REFERENCE_VERSION
from sae_pipeline.drift.report import SCHEMA_VERSION, overall_status, validate_report
from sae_pipeline.drift.scores import score_section


class ReferenceVersionError(ValueError):
    """The stored reference was built by another release (e.g. a model trained before drift references v2)."""


class DriftAccumulator:
    """Drift of one partition versus ``reference`` (from :func:`build_reference`), fed in record batches."""

    def __init__(self, reference: dict, settings: DriftConfig | None = None):
        if reference.get("version") != REFERENCE_VERSION:
            raise ReferenceVersionError(
                f"drift reference version {reference.get('version')!r} is not {REFERENCE_VERSION}: "
                "it was built by another release; retrain (or rebuild the reference) to get drift reports"
            )
        self.reference = reference
        self.settings = settings or DriftConfig()
        self._columns = {name: counts_for(summary) for name, summary in reference["columns"].items()}
        self._scores = NumericCounts(reference["scores"]) if reference.get("scores") else None
        self._n_rows = 0
        self._n_flagged = 0
        self._saw_flags = False
        self._saw_scores = False
        latent_reference = reference.get("latents")
        n_latents = latent_reference["n_latents"] if latent_reference else 0
        self._latent_fire = np.zeros(n_latents, dtype=np.int64)
        self._latent_total = np.zeros(n_latents)
        self._latent_rows = 0
        self._groups: GroupCounts | None = None

    def update(
        self,
        batch: pl.DataFrame,
        scores: np.ndarray | None = None,
        flagged: np.ndarray | None = None,
        codes: np.ndarray | None = None,
        groups: GroupBatch | None = None,
    ) -> DriftAccumulator:
        """Add one record batch: its rows, and optionally per-row anomaly scores, anomaly flags, SAE codes and
        context groups (these need `flagged`)."""
        require_columns(batch, list(self._columns))
        for label, per_row in (("scores", scores), ("flagged", flagged), ("codes", codes)):
            if per_row is not None and len(per_row) != batch.height:
                raise ValueError(f"{label} has {len(per_row)} rows but the batch has {batch.height}")
        for name, state in self._columns.items():
            state.update_column(batch[name])
        self._n_rows += batch.height
        if scores is not None:
            self._saw_scores = True
            if self._scores is not None:
                self._scores.update(np.asarray(scores, dtype=float))
        if flagged is not None:
            self._saw_flags = True
            self._n_flagged += int(np.count_nonzero(np.asarray(flagged)))
        if codes is not None and self._latent_fire.size:
            if np.shape(codes)[1] != self._latent_fire.size:
                raise ValueError(f"codes have {np.shape(codes)[1]} latents, the reference {self._latent_fire.size}")
            fire, total = latents.usage(codes)
            self._latent_fire += fire
            self._latent_total += total
            self._latent_rows += len(codes)
        if groups is not None and flagged is not None:
            self._groups = self._groups or GroupCounts(groups.nullable_columns)
            self._groups.update(groups, flagged)
        return self

    def report(
        self,
        partition: str = "",
        quarantined_rows: int | None = None,
        quarantine_reasons: dict[str, int] | None = None,
        expected_anomaly_rate: float | None = None,
    ) -> dict:
        """The report.json content for everything added so far (validated against the schema)."""
        if expected_anomaly_rate is not None and not 0.0 < expected_anomaly_rate < 1.0:
            raise ValueError(f"expected_anomaly_rate must be strictly between 0 and 1, got {expected_anomaly_rate}")
        settings = self.settings
        columns = {}
        for name, state in self._columns.items():
            test = configured_test(settings, name, state.summary["kind"])
            if isinstance(state, NumericCounts):
                columns[name] = numeric_column(state, test, settings)
            else:
                columns[name] = categorical_column(state, test, settings)
        ranked = sorted(columns, key=lambda name: (-columns[name]["severity"], name))
        drifted = [name for name in ranked if columns[name]["drifted"]]
        share = fraction(len(drifted), len(columns))
        dataset_drift = bool(columns) and share >= settings.drift_share
        anomalies = None
        if self._saw_flags:
            anomalies = anomaly_rate_section(
                self._n_rows,
                self._n_flagged,
                expected_anomaly_rate,
                settings.anomaly_rate_alpha,
                calibration_rows=self._calibration_rows(),
            )
        report = {
            "schema_version": SCHEMA_VERSION,
            "partition": partition,
            "n_rows": self._n_rows,
            "reference_n_rows": self.reference["n_rows"],
            "dataset_drift": dataset_drift,
            "drift_share": share,
            "drift_share_threshold": settings.drift_share,
            "n_columns": len(columns),
            "n_drifted_columns": len(drifted),
            "drifted_columns": drifted,
            "overall_status": overall_status(dataset_drift, len(drifted)),
            "columns": {name: columns[name] for name in ranked},
            "scores": score_section(self._scores, self._n_rows, self.reference.get("threshold"), settings)
            if self._saw_scores
            else None,
            "anomalies": anomalies,
            "latents": self._latent_section(),
            "quarantine": quarantine_section(quarantined_rows, quarantine_reasons, self._n_rows),
            "groups": self._groups.section(expected_anomaly_rate) if self._groups else None,
        }
        return validate_report(report)

    def _calibration_rows(self) -> int | None:
        """How many held-out scores the reference's threshold was calibrated on (None: no calibrated threshold)."""
        scores = self.reference.get("scores")
        return scores["n_rows"] if scores and self.reference.get("threshold") is not None else None

    def _latent_section(self) -> dict | None:
        reference = self.reference.get("latents")
        if not reference or not self._latent_rows:
            return None
        settings = self.settings
        return latents.compare_usage(
            reference,
            self._latent_fire,
            self._latent_total,
            self._latent_rows,
            threshold=settings.latent_threshold,
            min_frequency=settings.latent_min_frequency,
            top=settings.latent_top,
        )


def compare_to_reference(
    reference: dict,
    frame: pl.DataFrame,
    scores: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    expected_anomaly_rate: float | None = None,
    partition: str = "",
    *,
    codes: np.ndarray | None = None,
    settings: DriftConfig | None = None,
    quarantined_rows: int | None = None,
    quarantine_reasons: dict[str, int] | None = None,
) -> dict:
    """One-shot drift report of a whole partition: a :class:`DriftAccumulator` fed one batch."""
    accumulator = DriftAccumulator(reference, settings)
    accumulator.update(frame, scores=scores, flagged=flagged, codes=codes)
    return accumulator.report(
        partition=partition,
        quarantined_rows=quarantined_rows,
        quarantine_reasons=quarantine_reasons,
        expected_anomaly_rate=expected_anomaly_rate,
    )
