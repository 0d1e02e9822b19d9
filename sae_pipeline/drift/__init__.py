"""Drift of scored partitions versus a stored training reference: statistics, reports, HTML, trend, policy.

Streaming API (one module per concept):

    reference = build_reference(frame, numeric, categorical, scores=..., codes=..., decoder_weights=...,
                                feature_sources=..., threshold=..., settings=config.drift)   # at training
    acc = DriftAccumulator(reference, config.drift)                                           # per partition
    acc.update(batch, scores, flagged, codes)                                                 # per batch
    report = acc.report(partition=..., quarantined_rows=..., quarantine_reasons=..., expected_anomaly_rate=...)
    render_html(report), render_markdown(report), render_trend(reports), policy_wants_training(report, policy)

``compare_to_reference`` is the one-shot form. Nothing here imports Prefect or does I/O.

Modules: :mod:`.accumulator` (batches in, report.json out), :mod:`.counts` (running counts per column),
:mod:`.columns` (each column's drift test and verdict), :mod:`.stattests` (the drift-test registry, one module per
test), :mod:`.scores` (anomaly-score drift), :mod:`.anomaly_rate`, :mod:`.latents`, :mod:`.quarantine`,
:mod:`.cdf` and :mod:`.plots` (quantiles and pictures from binned counts), :mod:`.reference` and :mod:`.binning`
(the stored reference), :mod:`.report` (the schema), :mod:`.html`, :mod:`.svg`, :mod:`.markdown`, :mod:`.trend`,
:mod:`.policy`.

The names below are loaded on first use (PEP 562) rather than imported here: :mod:`sae_pipeline.config` derives its
allowed drift methods from :mod:`.stattests`, and importing that subpackage runs this file first; the engine
modules in turn read the config's types, so an eager import here would be circular.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it.
_EXPORTS = {
    "DriftAccumulator": "accumulator",
    "GroupBatch": "groups",
    "ReferenceVersionError": "accumulator",
    "compare_to_reference": "accumulator",
    "NULL_CATEGORY": "common",
    "OTHER_CATEGORY": "common",
    "UNSEEN_CATEGORY": "common",
    "render_html": "html",
    "render_markdown": "markdown",
    "policy_wants_training": "policy",
    "REFERENCE_VERSION": "reference",
    "build_reference": "reference",
    "SCHEMA_VERSION": "report",
    "DriftReport": "report",
    "describe_reference": "report",
    "report_json_schema": "report",
    "validate_report": "report",
    "verdict": "report",
    "render_trend": "trend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what static tools see; at run time __getattr__ provides the same names
    from sae_pipeline.drift.accumulator import DriftAccumulator, ReferenceVersionError, compare_to_reference
    from sae_pipeline.drift.common import NULL_CATEGORY, OTHER_CATEGORY, UNSEEN_CATEGORY
    from sae_pipeline.drift.groups import GroupBatch
    from sae_pipeline.drift.html import render_html
    from sae_pipeline.drift.markdown import render_markdown
    from sae_pipeline.drift.policy import policy_wants_training
    from sae_pipeline.drift.reference import REFERENCE_VERSION, build_reference
    from sae_pipeline.drift.report import (
        SCHEMA_VERSION,
        DriftReport,
        describe_reference,
        report_json_schema,
        validate_report,
        verdict,
    )
    from sae_pipeline.drift.trend import render_trend
