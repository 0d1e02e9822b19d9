"""Typed pipeline configuration, loaded from YAML.

One `PipelineConfig` describes a whole job: where the lake is, what each column means (and which columns the
model must never see), the model's hyperparameters, the threshold policy and where outputs go. Unknown keys
are rejected so that a typo fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import posixpath
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from sae_pipeline import storage
from sae_pipeline.column_types import COLUMN_TYPES, ColumnTypeName, types_where
from sae_pipeline.config_errors import describe_validation_error
from sae_pipeline.detector_settings import ModelSettings, setting_field
from sae_pipeline.drift.stattests import describe_available, get_stattest, kind_error, stattest_names

ColumnRole = Literal["numeric", "categorical", "identifier", "label", "timestamp"]
PartitionKeyType = Literal["string", "date", "int"]

#: Roles whose columns feed the model; identifiers, labels and timestamps are carried through untouched.
MODEL_ROLES = ("numeric", "categorical")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    # Errors name the field and the rule but never echo the value: a URI or a setting may carry a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ColumnSpec(_Strict):
    """One input column: its type, validity rules and its role for the model."""

    name: str
    type: ColumnTypeName
    role: ColumnRole
    nullable: bool = False
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> ColumnSpec:
        kind = COLUMN_TYPES[self.type]
        if (self.min is not None or self.max is not None) and not kind.bounded:
            bounded = " or ".join(types_where(lambda kind: kind.bounded))
            raise ValueError(f"column {self.name!r}: min/max only apply to {bounded} columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is greater than max {self.max}")
        if self.role in MODEL_ROLES and self.role not in kind.model_roles:
            allowed = ", ".join(types_where(lambda kind: self.role in kind.model_roles))
            raise ValueError(f"column {self.name!r}: a {self.role} column must be one of {allowed}")
        return self


def _without_query(uri: str) -> str:
    if "?" in uri:
        raise ValueError(
            f"{uri.split('?', 1)[0]!r}: query options in storage URIs are not supported (output paths are appended to "
            "the URI and it is written to run summaries): set the endpoint and credentials in the environment "
            "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)"
        )
    return uri


#: A local path or a filesystem URI such as `s3://bucket/prefix`, without `?options`.
StorageUri = Annotated[str, Field(min_length=1), AfterValidator(_without_query)]


#: How the input table is stored: Hive-style Parquet folders, a Delta Lake table, an Apache Iceberg table.
LakeFormat = Literal["parquet", "delta", "iceberg"]


class CatalogConfig(_Strict):
    """The Iceberg catalog that names the input table, as pyiceberg's `load_catalog(name, type=..., uri=...,
    warehouse=..., **properties)` takes it. The default is the SQL catalog on a local SQLite file
    (`uri: sqlite:///catalog.db`, relative to the config); `rest` and `glue` take their own properties. Secrets
    belong in pyiceberg's environment variables (`PYICEBERG_CATALOG__<NAME>__<PROPERTY>`), never in the config."""

    name: str = Field("default", min_length=1)
    type: Literal["sql", "rest", "glue", "hive", "dynamodb"] = "sql"
    uri: str | None = Field(None, min_length=1)
    warehouse: str | None = Field(None, min_length=1)
    properties: dict[str, str] = Field(default_factory=dict)

    def load_properties(self) -> dict[str, str]:
        """What `pyiceberg.catalog.load_catalog` takes after the name."""
        known = {"type": self.type, "uri": self.uri, "warehouse": self.warehouse}
        return {**{key: value for key, value in known.items() if value is not None}, **self.properties}


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """`30s`, `15m`, `1h`, `2d`, `1w` as a timedelta; raises ValueError naming the accepted forms."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError("expected a duration such as 30m, 1h, 2d or 1w")
    return dt.timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def _duration(text: str) -> str:
    parse_duration(text)
    return text.strip()


Duration = Annotated[str, AfterValidator(_duration)]


class LakeConfig(_Strict):
    """The input table: Hive-style Parquet folders (`key=value/` directories) at `uri` (`format: parquet`, the
    default), a Delta Lake table at `uri` (`delta`), or the Iceberg table `table` (`namespace.name`) of `catalog`
    (`iceberg`). `partition_keys` names the partition keys in order with their types; for Delta and Iceberg they
    must be the table's own partition columns (Iceberg: its partition fields, e.g. `event_time_day` for a day
    transform)."""

    format: LakeFormat = "parquet"
    uri: StorageUri | None = None
    table: str | None = Field(None, pattern=r"^[^.\s]+(\.[^.\s]+)+$")
    catalog: CatalogConfig | None = None
    partition_keys: dict[str, PartitionKeyType] = Field(default_factory=lambda: {"day": "date"})
    #: How often a new partition is expected (`1d`, `1h`): a partition's time is its first `date` key (plus its `hour`
    #: key, an int, when there is one); gaps are reported missing and a lake without the next one in time as late.
    expected_every: Duration | None = None

    @model_validator(mode="after")
    def _check_format(self) -> LakeConfig:
        if self.expected_every is not None and "date" not in self.partition_keys.values():
            raise ValueError(
                "lake.expected_every needs a partition key of type date (the partition's time); "
                f"lake.partition_keys has {dict(self.partition_keys)}"
            )
        if self.format == "iceberg":
            if self.table is None:
                raise ValueError("lake.format iceberg needs lake.table (namespace.table) and lake.catalog")
            if self.uri is not None:
                raise ValueError("lake.format iceberg names its table with lake.table and lake.catalog, not lake.uri")
        else:
            if self.uri is None:
                raise ValueError(f"lake.format {self.format} needs lake.uri")
            if self.table is not None or self.catalog is not None:
                raise ValueError("lake.table and lake.catalog are only for lake.format iceberg")
        return self

    @property
    def location(self) -> str:
        """The table as error messages and logs name it."""
        return self.uri if self.uri is not None else f"iceberg table {self.table}"

    @property
    def iceberg_catalog(self) -> CatalogConfig:
        return self.catalog or CatalogConfig()


class FeatureConfig(_Strict):
    """Categorical encoding: levels rarer than `min_category_frequency` share one "other" column."""

    min_category_frequency: float = Field(0.005, ge=0, lt=1)
    max_categories: int = Field(50, ge=1)


CalendarFeature = Literal["hour_of_day", "day_of_week"]


class HistoryConfig(_Strict):
    """Per-entity features from the entity's previous rows in time order: each numeric column's distance from its
    median over the entity's last `window` rows, in units of the group's spread (a median over a window several
    times longer than an incident, so the rows after an incident are judged against the normal, not the incident).
    A partition's first rows take their history from the end of the previous partition, so scores do not depend
    on how partitions were batched into runs."""

    window: int = Field(36, ge=2, le=1000)


class ContextConfig(_Strict):
    """Judge each row in its context (every part optional; without this section rows are scored alone).

    `entity`: the column whose rows form one sequence (a host, a machine, a customer). `baseline_by`: columns whose
    groups get their own baseline, learned at training and stored with the one model (default: the entity);
    groups with fewer than `min_group_rows` training rows, and groups never seen, are judged against the fleet.
    `calendar`: cyclic features of `timestamp` (default: the config's timestamp column) so that each hour or
    weekday has its own normal. `history`: features from each entity's previous rows (needs `timestamp`).
    """

    entity: str | None = Field(None, min_length=1)
    baseline_by: list[str] | None = None
    timestamp: str | None = Field(None, min_length=1)
    calendar: list[CalendarFeature] = Field(default_factory=list)
    history: HistoryConfig | None = None
    min_group_rows: int = Field(50, ge=1)

    @property
    def enabled(self) -> bool:
        return self != ContextConfig()

    @property
    def groups(self) -> list[str]:
        """The columns that form baseline groups ([] when there are none)."""
        if self.baseline_by is not None:
            return list(self.baseline_by)
        return [self.entity] if self.entity else []


class ModelConfig(_Strict, ModelSettings):
    """The detector's hyperparameters, as `SAEDetector` takes them: `ModelSettings` (sae_pipeline/detector_settings.py)
    declares each one's default, bounds and meaning once, for both. `None` means the detector's data-dependent
    default; `seed` is the detector's `random_state`."""

    model_config = _Strict.model_config
    seed: int = setting_field("random_state")

    def detector_params(self) -> dict:
        """The `SAEDetector` parameters this section sets (all but `contamination` and `verbose`)."""
        params = self.model_dump(exclude={"seed"})
        return {**params, "random_state": self.seed}


class ThresholdConfig(_Strict):
    """Rows scoring above the k-th largest of n held-out validation scores, k = floor(target_fpr x (n + 1)), are
    flagged (split-conformal, `sae_pipeline.thresholds`); `target_fpr` is the detector's `contamination`, with its
    bounds."""

    target_fpr: float = setting_field("contamination")


class TrainingConfig(_Strict):
    """Which partitions train the model (all when `partitions` is unset) and how an update fine-tunes it.

    A first model trains on a seeded sample of at most `max_rows` valid rows. Later runs that see new or changed
    training partitions fine-tune the champion for `update_steps` steps on the new rows plus up to `replay_rows`
    earlier training rows kept with the model (so old normal behaviour is not forgotten); `evaluation_fraction`
    of the new rows is held out to compare the update with the champion, and then joins the rows its threshold is
    calibrated on.
    """

    partitions: list[str] | None = None
    max_rows: int = Field(200_000, ge=10)
    update_steps: int = Field(150, ge=1)
    replay_rows: int = Field(5_000, ge=0)
    evaluation_fraction: float = Field(0.2, gt=0, lt=0.5)


class PromotionConfig(_Strict):
    """When a newly trained or updated version replaces the champion.

    `no_worse`: its trimmed mean anomaly score on the held-out recent rows is at most the champion's times
    (1 + `score_tolerance`), and its flagged rate there is no further from the target false-positive rate than
    the champion's plus `flagged_rate_tolerance` (default 0: never further; an absolute slack such as the former
    default 0.01 is twice a target of 0.5% and let a candidate flagging 1.00% replace one flagging 0.33%).
    Under `no_worse` a version that flags more of the rows reviewers marked `normal` than the champion is never
    promoted (`sae-pipeline review`). `always` promotes every new version; `manual` never does (use
    `sae-pipeline models promote`).
    `error_tolerance`, the former name of `score_tolerance`, is still read.
    """

    policy: Literal["no_worse", "always", "manual"] = "no_worse"
    score_tolerance: float = Field(0.05, ge=0, validation_alias=AliasChoices("score_tolerance", "error_tolerance"))
    flagged_rate_tolerance: float = Field(0.0, ge=0, le=1)


class RegistryConfig(_Strict):
    """Model versions kept: the `keep_versions` newest plus every version an alias points at."""

    keep_versions: int = Field(10, ge=1)
    promotion: PromotionConfig = PromotionConfig()


class RunConfig(_Strict):
    """Run exclusion: a run holds a lease on the output folder, renewed while it runs, that expires after
    `lease_ttl_seconds` if its holder dies on another machine (on the same machine a dead holder is detected at
    once)."""

    lease_ttl_seconds: int = Field(600, ge=10)


class ScoringConfig(_Strict):
    """`top_features`: explaining columns per scored row; `batch_rows`: rows per streamed batch (memory bound);
    `max_quarantine_share`: a partition whose quarantined share of rows reaches this fails (its quarantine is kept,
    nothing is committed to the ledger, so the next run retries it); 1.0 fails only fully quarantined partitions.

    Where partitions are scored (one task each): `task_runner: threads` (default) in the run's own process, or
    `dask` on a Dask cluster: the scheduler at `dask_address` (e.g. `tcp://scheduler:8786`), or, without one, a
    local cluster started for the run with `dask_workers` worker processes (None: Dask's default for the machine)."""

    top_features: int = Field(3, ge=1)
    batch_rows: int = Field(131_072, ge=1)
    max_quarantine_share: float = Field(1.0, gt=0, le=1)
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = Field(None, min_length=1)
    dask_workers: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_dask(self) -> ScoringConfig:
        if self.task_runner != "dask" and (self.dask_address or self.dask_workers):
            raise ValueError("scoring.dask_address and scoring.dask_workers need scoring.task_runner: dask")
        if self.dask_address and self.dask_workers:
            raise ValueError(
                "scoring.dask_workers sizes the local cluster started when there is no scheduler address; "
                "with scoring.dask_address the cluster's own workers are used"
            )
        return self


def _registered_drift_method(name: str) -> str:
    if name not in stattest_names():
        raise ValueError(f"unknown drift method; available: {describe_available()}")
    return name


#: The name of a registered drift test (`sae_pipeline/drift/stattests/`: ks, wasserstein, chisquare, ...).
DriftMethod = Annotated[
    str, AfterValidator(_registered_drift_method), WithJsonSchema({"type": "string", "enum": list(stattest_names())})
]


class DriftTestConfig(_Strict):
    """A drift test override: `method` (None = chosen from type, size and distinct values) and `threshold`.

    `threshold` is read in the test's direction (its `StatTest.direction` in the registry): a p-value for `ks`
    and `chisquare` (drift when p <= threshold), a distance for `wasserstein` (normalised by the reference
    standard deviation), `jensenshannon` and `psi` (drift when score >= threshold). None means the test's
    `default_threshold` (0.05 for p-values, 0.1 for distances).
    """

    method: DriftMethod | None = None
    threshold: float | None = Field(None, gt=0)


class DriftPolicyConfig(_Strict):
    """When a scored partition asks for a `train_or_update` run."""

    on_dataset_drift: bool = True
    #: Ask for training when the observed anomaly rate exceeds this many times the target FPR (None: never).
    anomaly_rate_factor: float | None = Field(3.0, gt=1)


class DriftConfig(_Strict):
    """Drift reports: per-type and per-column tests, the dataset drift share, reference bins and the policy."""

    #: Dataset drift when at least this share of the model columns drifted.
    drift_share: float = Field(0.5, gt=0, le=1)
    numeric: DriftTestConfig = DriftTestConfig()
    categorical: DriftTestConfig = DriftTestConfig()
    columns: dict[str, DriftTestConfig] = Field(default_factory=dict)
    #: A reference with at most this many rows gets p-value tests (KS, chi-square), a larger one distances.
    small_reference_rows: int = Field(1000, ge=1)
    #: Numeric columns with at most this many distinct reference values are tested like categorical ones.
    low_cardinality: int = Field(5, ge=1)
    #: Quantile-spaced bins of each numeric reference column (plus tail bins), the resolution of KS/Wasserstein.
    bins: int = Field(200, ge=10, le=5000)
    #: Equal-frequency bins of the PSI reported for every numeric column (deciles by default).
    psi_bins: int = Field(10, ge=2, le=100)
    #: A column also drifts when its null share moved by at least this much (absolute).
    null_share_threshold: float = Field(0.1, gt=0, le=1)
    #: Latent usage drifts when the Jensen-Shannon distance of latent firing profiles reaches this.
    latent_threshold: float = Field(0.1, gt=0)
    #: Latents firing on fewer rows than this share count as silent.
    latent_min_frequency: float = Field(0.001, ge=0, lt=1)
    #: How many latents with the largest usage shift the report describes.
    latent_top: int = Field(10, ge=0)
    #: One-sided binomial test level for "anomaly rate above the target FPR".
    anomaly_rate_alpha: float = Field(0.001, gt=0, lt=1)
    policy: DriftPolicyConfig = DriftPolicyConfig()

    @model_validator(mode="after")
    def _check_methods(self) -> DriftConfig:
        """Each per-type method must apply to that column kind (the registry's `column_kinds`)."""
        for kind, test in (("numeric", self.numeric), ("categorical", self.categorical)):
            if test.method and not get_stattest(test.method).applies_to(kind):
                raise ValueError(f"drift.{kind}: {kind_error(get_stattest(test.method), kind)}")
        return self


class IncidentsConfig(_Strict):
    """How flagged rows become incidents (`sae_pipeline.incidents`).

    Flagged rows of one entity (`context.entity`, else the identifier column) belong to one incident while each is
    at most `gap` after the previous one in time (the timestamp column), across partition boundaries; without a
    timestamp column, while they are at most `gap_rows` rows apart in row order. An incident's pattern is the first
    `pattern_features` of the columns that explain it most. An incident reviewed `normal` suppresses later incidents
    of the same entity with the same pattern that start within `suppress_for` of its end."""

    gap: Duration = "1h"
    gap_rows: int = Field(1, ge=1)
    pattern_features: int = Field(2, ge=1)
    suppress_for: Duration = "7d"


class VolumeConfig(_Strict):
    """Volume checks per scored partition (`sae_pipeline.volume`): its rows read against the last `history` earlier
    partitions' (median ± `band_mads` x the scaled MAD, at least ± `rows_tolerance` x the median) and its
    quarantined share against theirs (above the median + `band_mads` x the scaled MAD, at least
    + `quarantine_tolerance`); with fewer than `min_history` earlier partitions the verdict is `no_history`."""

    history: int = Field(30, ge=1)
    min_history: int = Field(5, ge=1)
    band_mads: float = Field(4.0, gt=0)
    rows_tolerance: float = Field(0.1, ge=0)
    quarantine_tolerance: float = Field(0.01, ge=0, le=1)


class EventsConfig(_Strict):
    """The Prefect events a run emits (`flows/events.py`). `enabled: false` emits none. Events never carry row
    values except, in an incident's explanation, the row's and the typical value of the columns listed in
    `explanation_values` (default none: only the explaining columns' names and shares). `max_incident_events`
    caps the `incident.opened` events of one run (the worst first; all are counted in the scored events). An
    incident whose min p-value is below `critical_pvalue` is labelled `sae-pipeline.severity: critical`, else
    `warning` (automations match labels, not payload numbers)."""

    enabled: bool = True
    explanation_values: list[str] = Field(default_factory=list)
    max_incident_events: int = Field(50, ge=0)
    critical_pvalue: float = Field(1e-4, gt=0, le=1)


class OutputConfig(_Strict):
    """Output root; each kind of output lives in its own sibling folder under it. `format`: the scored and
    quarantine tables as Hive-style Parquet folders (`parquet`) or as Delta tables (`delta`), whose files no longer
    referenced by the current version are vacuumed after each run once older than `vacuum_retention_hours`
    (None: never vacuum)."""

    uri: StorageUri
    format: Literal["parquet", "delta"] = "parquet"
    vacuum_retention_hours: int | None = Field(168, ge=0)

    def _child(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    @property
    def scored_uri(self) -> str:
        return self._child("scored")

    @property
    def quarantine_uri(self) -> str:
        return self._child("quarantine")

    @property
    def ledger_uri(self) -> str:
        return self._child("ledger")

    @property
    def models_uri(self) -> str:
        return self._child("models")

    @property
    def drift_uri(self) -> str:
        return self._child("drift")

    @property
    def runs_uri(self) -> str:
        return self._child("runs")

    @property
    def flagged_uri(self) -> str:
        return self._child("flagged")

    @property
    def incidents_uri(self) -> str:
        return self._child("incidents")

    @property
    def reviews_uri(self) -> str:
        return self._child("reviews")

    @property
    def staging_uri(self) -> str:
        return self._child("_staging")

    @property
    def lease_uri(self) -> str:
        return self._child("_lease.json")


class PipelineConfig(_Strict):
    name: str = "sae-pipeline"
    lake: LakeConfig
    columns: list[ColumnSpec]
    features: FeatureConfig = FeatureConfig()
    context: ContextConfig = ContextConfig()
    model: ModelConfig = ModelConfig()
    thresholds: ThresholdConfig = ThresholdConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()
    drift: DriftConfig = DriftConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    volume: VolumeConfig = VolumeConfig()
    events: EventsConfig = EventsConfig()
    registry: RegistryConfig = RegistryConfig()
    run: RunConfig = RunConfig()
    output: OutputConfig

    @model_validator(mode="after")
    def _check_columns(self) -> PipelineConfig:
        names = [column.name for column in self.columns]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"columns listed more than once: {duplicates}")
        clashes = sorted(set(names) & set(self.lake.partition_keys))
        if clashes:
            raise ValueError(f"partition keys must not also be listed as columns: {clashes}")
        if not any(column.role in MODEL_ROLES for column in self.columns):
            raise ValueError("at least one column must have role 'numeric' or 'categorical'")
        self._check_drift_overrides()
        self._check_context()
        unknown = sorted(set(self.events.explanation_values) - set(names))
        if unknown:
            raise ValueError(f"events.explanation_values names column(s) that are not configured: {unknown}")
        return self

    def _check_context(self) -> None:
        """Context columns must exist with a role that fits; calendar and history need a timestamp column."""
        context = self.context
        roles = {column.name: column.role for column in self.columns}
        named = [("context.entity", context.entity)] if context.entity else []
        named += [("context.baseline_by", name) for name in context.baseline_by or []]
        groupable = sorted(n for n, r in roles.items() if r in ("identifier", "categorical"))
        for where, name in named:
            if roles.get(name) not in ("identifier", "categorical"):
                close = difflib.get_close_matches(name, groupable, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"{where}: {name!r} must be an identifier or categorical column ({hint}those are: {groupable})"
                )
        if not (context.calendar or context.history):
            return
        if context.timestamp is not None and roles.get(context.timestamp) != "timestamp":
            raise ValueError(f"context.timestamp: {context.timestamp!r} is not a column with role 'timestamp'")
        if context.timestamp is None and len(self.columns_with_role("timestamp")) != 1:
            raise ValueError(
                "context.calendar and context.history need one timestamp column: declare exactly one column with "
                "role 'timestamp' or name it in context.timestamp"
            )

    @property
    def timestamp_column(self) -> str | None:
        """The column that orders rows in time for context (context.timestamp, else the only timestamp column)."""
        if self.context.timestamp:
            return self.context.timestamp
        stamps = self.columns_with_role("timestamp")
        return stamps[0].name if len(stamps) == 1 else None

    def _check_drift_overrides(self) -> None:
        roles = {column.name: column.role for column in self.columns if column.role in MODEL_ROLES}
        unknown = sorted(set(self.drift.columns) - set(roles))
        if unknown:
            raise ValueError(
                f"drift.columns names column(s) that are not numeric or categorical model columns: {unknown} "
                f"(model columns: {sorted(roles)})"
            )
        for name, test in self.drift.columns.items():
            if test.method and not get_stattest(test.method).applies_to(roles[name]):
                raise ValueError(f"drift.columns.{name}: {kind_error(get_stattest(test.method), roles[name])}")

    @property
    def entity_column(self) -> str | None:
        """The column whose rows form one sequence for incidents: `context.entity`, else the first identifier column
        (None: one implicit entity)."""
        if self.context.entity:
            return self.context.entity
        identifiers = self.columns_with_role("identifier")
        return identifiers[0].name if identifiers else None

    def columns_with_role(self, *roles: ColumnRole) -> list[ColumnSpec]:
        return [column for column in self.columns if column.role in roles]

    def model_hash(self) -> str:
        """A digest of every setting that shapes a trained model: when it changes, a model is trained afresh."""
        model_facing = self.model_dump(include={"columns", "features", "model", "thresholds"}, mode="json")
        model_facing["columns"] = [c for c in model_facing["columns"] if c["role"] in MODEL_ROLES]
        if self.context.enabled:  # absent when off, so configs without context keep their models
            model_facing["context"] = self.context.model_dump(mode="json")
        return hashlib.sha256(json.dumps(model_facing, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label_column(self) -> str | None:
        """The ground-truth column used only to evaluate a run (first `label` column), if any."""
        labels = self.columns_with_role("label")
        return labels[0].name if labels else None

    @property
    def label_kind_column(self) -> str | None:
        """A second, string `label` column naming each anomaly's kind (e.g. `anomaly_kind`), if any: runs then
        report recall per kind."""
        kinds = [
            column.name
            for column in self.columns_with_role("label")
            if column.type == "string" and column.name != self.label_column
        ]
        return kinds[0] if kinds else None


def _resolve_relative(uri: str, config_location: str) -> str:
    """Relative paths in a config are relative to the config's folder (a local folder or a URI prefix such as
    `s3://bucket/conf`), so configs can travel with their data."""
    if "://" in uri or Path(uri).is_absolute():
        return uri
    if "://" not in config_location:
        return str((Path(config_location).resolve().parent / uri).resolve())
    scheme, _, path = config_location.partition("://")
    bucket = path.split("/", 1)[0]
    resolved = posixpath.normpath(f"{posixpath.dirname(path)}/{uri}")
    if resolved.split("/", 1)[0] != bucket:
        raise ConfigError(f"{config_location}: {uri!r} points outside bucket {bucket!r}")
    return f"{scheme}://{resolved}"


def _resolve_catalog_paths(catalog: dict, config_location: str) -> None:
    """A SQLite catalog file (`sqlite:///catalog.db`) and a local warehouse are relative to the config's folder."""
    uri = catalog.get("uri")
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        catalog["uri"] = "sqlite:///" + _resolve_relative(uri.removeprefix("sqlite:///"), config_location)
    warehouse = catalog.get("warehouse")
    if isinstance(warehouse, str) and "://" not in warehouse:
        catalog["warehouse"] = "file://" + _resolve_relative(warehouse, config_location)


def load_config(location: str | Path) -> PipelineConfig:
    """Read and validate a YAML config from a path or a URI (`s3://bucket/conf/pipeline.yaml`); errors name it and
    the offending field."""
    location = str(location)
    try:
        raw = yaml.safe_load(storage.read_bytes(location).decode())
    except storage.LakeReadError as error:
        if isinstance(error.__cause__, FileNotFoundError):
            raise ConfigError(f"config file not found: {location}") from None
        raise ConfigError(f"cannot read config file {location}: {error.__cause__}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot read config file {location}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{location}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{location}: expected a mapping at the top level")
    for section in ("lake", "output"):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get("uri"), str):
            raw[section]["uri"] = _resolve_relative(raw[section]["uri"], location)
    catalog = raw.get("lake", {}).get("catalog") if isinstance(raw.get("lake"), dict) else None
    if isinstance(catalog, dict):
        _resolve_catalog_paths(catalog, location)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{location}: {describe_validation_error(error, raw, PipelineConfig)}") from None
