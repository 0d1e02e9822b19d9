"""Drift of scored partitions versus a stored training reference: statistics, reports, HTML, trend, policy.

Streaming API (one module per concept):

    reference = build_reference(frame, numeric, categorical, scores=..., codes=..., decoder_weights=...,
                                feature_sources=..., threshold=..., settings=config.drift)   # at training
    acc = DriftAccumulator(reference, config.drift)                                           # per partition
    acc.update(batch, scores, flagged, codes)                                                 # per batch
    report = acc.report(partition=..., quarantined_rows=..., quarantine_reasons=..., expected_anomaly_rate=...)
    render_html(report), render_markdown(report), render_trend(reports), policy_wants_training(report, policy)

``compare_to_reference`` is the one-shot form. Nothing here imports Prefect or does I/O.
"""

from sae_pipeline.drift.accumulator import DriftAccumulator, ReferenceVersionError, compare_to_reference
from sae_pipeline.drift.common import NULL_CATEGORY, OTHER_CATEGORY, UNSEEN_CATEGORY
from sae_pipeline.drift.html import render_html
from sae_pipeline.drift.markdown import render_markdown
from sae_pipeline.drift.policy import policy_wants_training
from sae_pipeline.drift.reference import REFERENCE_VERSION, build_reference
from sae_pipeline.drift.report import SCHEMA_VERSION, DriftReport, report_json_schema, validate_report, verdict
from sae_pipeline.drift.trend import render_trend

__all__ = [
    "NULL_CATEGORY",
    "OTHER_CATEGORY",
    "REFERENCE_VERSION",
    "SCHEMA_VERSION",
    "UNSEEN_CATEGORY",
    "DriftAccumulator",
    "DriftReport",
    "ReferenceVersionError",
    "build_reference",
    "compare_to_reference",
    "policy_wants_training",
    "render_html",
    "render_markdown",
    "render_trend",
    "report_json_schema",
    "validate_report",
    "verdict",
]
