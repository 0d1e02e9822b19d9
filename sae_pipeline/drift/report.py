"""The report.json schema (versioned), written once as pydantic models, and the verdict helpers.

``DriftReport.model_json_schema()`` (or :func:`report_json_schema`) gives the JSON Schema; every report that
:class:`~sae_pipeline.drift.accumulator.DriftAccumulator` produces is validated against these models before it
is returned. Bump ``SCHEMA_VERSION`` on any change that renames, removes or changes the meaning of a field;
adding an optional field is a minor change and keeps the version.

Schema version 1, top level: ``schema_version``, ``partition``, ``n_rows``, ``reference_n_rows``,
``dataset_drift`` (bool), ``drift_share`` (share of columns that drifted), ``drift_share_threshold``,
``n_columns``, ``n_drifted_columns``, ``drifted_columns`` (names, most drifted first), ``overall_status``
("ok" | "moderate" | "major"), ``columns`` (name -> :class:`ColumnDrift`, most drifted first), ``scores``
(anomaly-score drift), ``anomalies`` (anomaly rate vs target FPR), ``latents`` (SAE latent usage) and
``quarantine`` (quarantined rows and reasons); the last four are null when their input was not given.
``groups`` (flagged rates by context group, :class:`GroupRates`) is present with a context that forms groups.
``model_version`` and ``reference`` (what the partition was compared against, in words) are set by the pipeline,
which knows the model: null in reports made by :func:`compare_to_reference` alone and in reports written before.
``method`` takes the names of the registered drift tests (:mod:`.stattests`), in registration order.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from sae_pipeline.drift.stattests import stattest_names

SCHEMA_VERSION = 1

#: A registered drift test's name (``Literal["ks", "wasserstein", ...]``, derived from the registry).
Method = Literal[stattest_names()]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Plot(_Schema):
    """Reference vs current picture: ``bars`` (shares per label) or ``histogram`` (shares per bin between
    ``edges``, equal on a log scale when ``log``; ``*_outside`` = [share below edges[0], share above edges[-1]])."""

    type: Literal["bars", "histogram"]
    log: bool = False
    labels: list[str] | None = None
    edges: list[float] | None = None
    reference: list[float]
    current: list[float]
    reference_outside: list[float | None] | None = None
    current_outside: list[float | None] | None = None


class CategoryShare(_Schema):
    category: str
    fraction: float


class ColumnDrift(_Schema):
    """One column: the test (``method``/``score``/``threshold``) and whether the column counts as drifted.

    ``drifted`` = ``test_drifted`` (p-value methods: score <= threshold; distances: score >= threshold) or
    ``null_drifted`` (null share moved by at least ``drift.null_share_threshold``). ``score`` is None when the
    partition has no non-missing value. ``severity`` (score relative to threshold, > 1 = past it) orders columns.
    """

    kind: Literal["numeric", "categorical"]
    method: Method
    score: float | None
    threshold: float
    drifted: bool
    test_drifted: bool
    null_drifted: bool
    severity: float
    statistic: float | None
    psi: float | None
    n_rows: int
    null_share: float
    reference_null_share: float
    mean: float | None
    reference_mean: float | None
    quantiles: dict[str, float | None] | None
    reference_quantiles: dict[str, float | None] | None
    unseen_share: float | None
    unseen_categories: list[CategoryShare]
    plot: Plot | None


class ScoreDrift(_Schema):
    """Anomaly-score drift versus the held-out validation scores."""

    method: Method | None
    score: float | None
    threshold: float | None
    drifted: bool
    statistic: float | None
    psi: float | None
    n_rows: int
    quantiles: dict[str, float | None] | None
    reference_quantiles: dict[str, float | None] | None
    mean: float | None
    reference_mean: float | None
    detector_threshold: float | None
    above_threshold_share: float | None
    reference_above_threshold_share: float | None
    histogram: Plot | None


class AnomalyRate(_Schema):
    """Observed anomaly rate; one-sided exact test against the target FPR (``expected_rate``): beta-binomial for a
    threshold calibrated on ``calibration_rows`` held-out rows when the reference says so, else binomial."""

    n_rows: int
    n_flagged: int
    observed_rate: float
    expected_rate: float | None
    calibration_rows: int | None = None
    ratio_to_expected: float | None
    z_score: float | None
    p_value: float | None
    alpha: float
    anomaly_rate_exceeds_expected: bool


class LatentColumn(_Schema):
    column: str
    weight: float


class LatentShift(_Schema):
    latent: int
    reference_frequency: float
    frequency: float
    reference_mean_activation: float | None
    mean_activation: float | None
    change: float
    columns: list[LatentColumn]


class LatentUsage(_Schema):
    """SAE latent firing frequencies now vs the reference; JS distance of the firing profiles as the score."""

    n_latents: int
    method: Literal["jensenshannon"]
    score: float | None
    threshold: float
    drifted: bool
    silent: list[LatentShift]
    new: list[LatentShift]
    top_shifts: list[LatentShift]
    reference_frequency: list[float | None]
    frequency: list[float | None]


class ColumnQuarantine(_Schema):
    rows: int
    rate: float


class Quarantine(_Schema):
    """Rows quarantined by validation (``rate`` = share of all rows read), per reason and per column."""

    rows: int
    rate: float
    reasons: dict[str, int]
    columns: dict[str, ColumnQuarantine]


class GroupRate(_Schema):
    """One context group's flagged rate (``z_score``: its distance from the target in binomial standard errors),
    its baseline (``own``, ``fleet:few_rows``, ``fleet:new_group``) and its null shares beside its usual ones."""

    group: str
    baseline: str
    n_rows: int
    n_flagged: int
    rate: float
    z_score: float | None
    null_shares: dict[str, float]
    usual_null_shares: dict[str, float]


class GroupRates(_Schema):
    """Flagged rates by context group (``top``: the groups whose rate moved most first), and which groups were
    judged against the fleet's baseline because they are new or had too few training rows."""

    n_groups: int
    baselines: dict[str, int]
    new_groups: list[str]
    few_rows_groups: list[str]
    top: list[GroupRate]


class Volume(_Schema):
    """The partition's volume against the partitions before it (`sae_pipeline.volume`, added after the report was
    first written): rows read against their band and the quarantined share against its upper bound."""

    history: int
    rows_in: int
    rows_status: Literal["ok", "low", "high", "no_history"]
    rows_median: float | None
    rows_low: float | None
    rows_high: float | None
    quarantined_share: float
    quarantine_status: Literal["ok", "high", "no_history"]
    quarantine_median: float | None
    quarantine_high: float | None


class DriftReport(_Schema):
    schema_version: Literal[1]
    partition: str
    n_rows: int
    reference_n_rows: int
    dataset_drift: bool
    drift_share: float
    drift_share_threshold: float
    n_columns: int
    n_drifted_columns: int
    drifted_columns: list[str]
    overall_status: Literal["ok", "moderate", "major"]
    columns: dict[str, ColumnDrift]
    scores: ScoreDrift | None
    anomalies: AnomalyRate | None
    latents: LatentUsage | None
    quarantine: Quarantine | None
    groups: GroupRates | None = None
    model_version: str | None = None
    reference: str | None = None
    volume: Volume | None = None


def describe_reference(model_version: str, trained_on: list[str], n_rows: int) -> str:
    """The reference of a model's reports in words: "the training sample of model V: N rows of day=2026-11-01 to
    day=2026-11-07 (7 partitions)"."""
    if not trained_on:
        where = "its training data"
    elif len(trained_on) == 1:
        where = trained_on[0]
    else:
        where = f"{trained_on[0]} to {trained_on[-1]} ({len(trained_on)} partitions)"
    return f"the training sample of model {model_version}: {n_rows:,} rows of {where}"


def volume_unusual(volume: dict | None) -> bool:
    """Whether a report's `volume` (or a volume verdict's fields) is unusual: rows read outside their band, or the
    quarantined share above its bound."""
    return bool(volume) and (volume["rows_status"] in ("low", "high") or volume["quarantine_status"] == "high")


def describe_volume(volume: dict) -> str:
    """A report's `volume` in words: rows read against their band, the quarantined share against its bound ("100
    rows read (low; usual 250-350 from 4 earlier partitions), quarantined share 0.00% (ok; usual at most 1.00%)")."""
    if volume["rows_status"] == "no_history":
        return f"{volume['rows_in']} rows read (fewer than the earlier partitions needed to judge)"
    return (
        f"{volume['rows_in']} rows read ({volume['rows_status']}; usual {volume['rows_low']:.0f}-"
        f"{volume['rows_high']:.0f} from {volume['history']} earlier partitions), quarantined share "
        f"{volume['quarantined_share']:.2%} ({volume['quarantine_status']}; usual at most "
        f"{volume['quarantine_high']:.2%})"
    )


def validate_report(report: dict) -> dict:
    """Check a report against the schema (raises pydantic.ValidationError) and return it unchanged."""
    DriftReport.model_validate(report)
    return report


def report_json_schema() -> dict:
    """The JSON Schema of report.json."""
    return DriftReport.model_json_schema()


def overall_status(dataset_drift: bool, n_drifted_columns: int) -> str:
    """ "major" on dataset drift, "moderate" when some column drifted, else "ok" (the run summary's status)."""
    if dataset_drift:
        return "major"
    return "moderate" if n_drifted_columns else "ok"


def anomaly_rate_too_high(report: dict) -> bool:
    """Whether the partition flags more rows than the target explains: the anomaly-rate card is red, and the
    header says so (and is not green) even when no column drifted."""
    anomalies = report.get("anomalies")
    return bool(anomalies and anomalies["anomaly_rate_exceeds_expected"])


def verdict(report: dict) -> str:
    """What a person reads first: dataset drift or not, with the drifted share and the threshold; and the anomaly
    rate when it alone is above what the target explains."""
    head = "Dataset drift detected" if report["dataset_drift"] else "No dataset drift"
    sentence = (
        f"{head}: {report['n_drifted_columns']} of {report['n_columns']} columns drifted "
        f"({100 * report['drift_share']:.0f}%, threshold {100 * report['drift_share_threshold']:.0f}%)"
    )
    if report["drifted_columns"]:
        names = report["drifted_columns"]
        sentence += ": " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    sentence += "."
    if anomaly_rate_too_high(report):
        anomalies = report["anomalies"]
        sentence += (
            f" {'But the' if not report['n_drifted_columns'] else 'The'} anomaly rate "
            f"{100 * anomalies['observed_rate']:.2f}% is above what the target {100 * anomalies['expected_rate']:.2f}% "
            f"explains (p = {anomalies['p_value']:.2g})."
        )
    return sentence
