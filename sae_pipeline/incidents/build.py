"""Flagged rows grouped into incidents, and the `incidents` table.

An incident is a run of flagged rows of one entity, each at most `incidents.gap` after the previous one (or, without
a timestamp column, at most `incidents.gap_rows` rows after it, counting across the partition boundary), whichever
partitions they were scored in. Its id is a hash of the entity and its first row's key, so it survives reruns,
rescoring and retraining (it changes only when an earlier row joins the incident). Its `top_features` are the
columns that explain most of its rows (`scoring.top_features` of them, most frequent first, then highest ranked in
the rows); its pattern is the first `incidents.pattern_features` of those. Status: `open` until reviewed, `closed`
once it has a verdict, `suppressed` when an incident of the same entity with the same pattern, and at least as many
rows, was reviewed `normal` and ended at most `incidents.suppress_for` before it started (without a timestamp
column: whenever). A `normal` verdict covers what the reviewer saw: a longer run of the same pattern is raised.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import polars as pl

from sae_pipeline import parquet_io, storage
from sae_pipeline.config import PipelineConfig, parse_duration
from sae_pipeline.incidents.contract import INCIDENT_COLUMNS, arrow_schema
from sae_pipeline.incidents.flagged import read_flagged
from sae_pipeline.incidents.reviews import incident_verdicts, read_reviews
from sae_pipeline.ledger import Ledger
from sae_pipeline.parquet_io import PARTITION_FILE
from sae_pipeline.records import IncidentCounts
from sae_pipeline.tables.keys import partition_values

#: The flagged-table columns incidents are built from (plus the timestamp column, when there is one).
_ROW_COLUMNS = [
    "row_key",
    "incident_entity",
    "source_partition",
    "row_position",
    "partition_rows",
    "anomaly_score",
    "anomaly_pvalue",
    "top_features",
    "model_version",
]


def partition_order(names: list[str]) -> list[str]:
    """Partition names in the lake's order (by key values, as `hive.discover_partitions` sorts them)."""
    return sorted(names, key=lambda name: tuple(partition_values(name).values()))


def incident_id(entity: str | None, first_row: str) -> str:
    """The stable id of an incident: a hash of its entity and its first row's key."""
    return hashlib.sha256(f"{entity or ''}\x1f{first_row}".encode()).hexdigest()[:12]


def assign_incidents(flagged: pl.DataFrame, config: PipelineConfig, order: list[str]) -> pl.DataFrame:
    """`flagged` rows (with `_ROW_COLUMNS` and the timestamp column) in time order per entity, each with its
    `incident_id`."""
    stamp = config.timestamp_column
    rank = {name: index for index, name in enumerate(order)}
    rows = flagged.with_columns(
        pl.col("source_partition").replace_strict(rank, default=len(rank), return_dtype=pl.Int64).alias("_rank"),
        (pl.col(stamp) if stamp else pl.lit(None, dtype=pl.Datetime("us"))).alias("_time"),
    )
    rows = rows.sort(["incident_entity", "_time", "_rank", "row_position"], nulls_last=True)
    same_entity = pl.col("incident_entity").eq_missing(pl.col("incident_entity").shift(1))
    rows_apart = pl.when(pl.col("_rank") == pl.col("_rank").shift(1)).then(
        pl.col("row_position") - pl.col("row_position").shift(1)
    )
    rows_apart = rows_apart.when(pl.col("_rank") == pl.col("_rank").shift(1) + 1).then(
        pl.col("partition_rows").shift(1) - pl.col("row_position").shift(1) + pl.col("row_position")
    )
    near_in_rows = rows_apart.otherwise(None) <= config.incidents.gap_rows
    near_in_time = (pl.col("_time") - pl.col("_time").shift(1)) <= parse_duration(config.incidents.gap)
    near = pl.when(pl.col("_time").is_not_null() & pl.col("_time").shift(1).is_not_null()).then(near_in_time)
    near = near.when(pl.col("_time").is_null() & pl.col("_time").shift(1).is_null()).then(near_in_rows)
    continues = (same_entity & near.otherwise(False)).fill_null(False)
    rows = rows.with_columns((~continues).cum_sum().alias("_number"))
    firsts = rows.group_by("_number").agg(pl.col("incident_entity").first(), pl.col("row_key").first())
    ids = {
        number: incident_id(entity, key)
        for number, entity, key in firsts.select("_number", "incident_entity", "row_key").iter_rows()
    }
    number = pl.col("_number").replace_strict(ids, return_dtype=pl.String) if ids else pl.lit(None, dtype=pl.String)
    return rows.with_columns(number.alias("incident_id"))


def summarise_incidents(rows: pl.DataFrame, config: PipelineConfig) -> pl.DataFrame:
    """One row per incident of `assign_incidents`' rows: where, when, how bad and why (before reviews)."""
    n_features = config.scoring.top_features
    features = (
        rows.select("incident_id", "top_features", pl.int_ranges(pl.col("top_features").list.len()).alias("_place"))
        .explode("top_features", "_place")
        .drop_nulls("top_features")
        .group_by("incident_id", "top_features")
        .agg(pl.len().alias("_count"), pl.col("_place").mean())
        .sort(["incident_id", "_count", "_place", "top_features"], descending=[False, True, False, False])
        .group_by("incident_id", maintain_order=True)
        .agg(pl.col("top_features").head(n_features))
    )
    versions = (
        rows.group_by("incident_id", "model_version")
        .agg(pl.len().alias("_count"))
        .sort(["incident_id", "_count", "model_version"], descending=[False, True, False])
        .group_by("incident_id", maintain_order=True)
        .agg(pl.col("model_version").first(), pl.col("model_version").sort().alias("model_versions"))
    )
    summary = rows.group_by("incident_id", maintain_order=True).agg(
        pl.col("incident_entity").first().alias("entity"),
        pl.col("_time").min().alias("start"),
        pl.col("_time").max().alias("end"),
        pl.col("row_key").first().alias("first_row"),
        pl.col("row_key").last().alias("last_row"),
        pl.len().cast(pl.Int64).alias("rows"),
        pl.col("anomaly_score").max().alias("peak_score"),
        pl.col("anomaly_score").mean().alias("mean_score"),
        pl.col("anomaly_pvalue").min().alias("min_pvalue"),
        pl.col("source_partition").unique(maintain_order=True).alias("partitions"),
    )
    return summary.join(features, on="incident_id", how="left").join(versions, on="incident_id", how="left")


def apply_reviews(incidents: pl.DataFrame, reviews: pl.DataFrame, config: PipelineConfig) -> pl.DataFrame:
    """Each incident's latest verdict, and its status: `closed` (reviewed), `suppressed` (an earlier incident of the
    same entity with the same pattern and at least as many rows was reviewed normal, and ended within
    `incidents.suppress_for` before this one started; without times, any such incident), else `open`."""
    verdicts = incident_verdicts(reviews)
    judged = incidents.join(
        verdicts.select("incident_id", pl.col("verdict"), pl.col("note").alias("verdict_note")),
        on="incident_id",
        how="left",
    )
    normal = verdicts.filter(pl.col("verdict") == "normal")
    window = parse_duration(config.incidents.suppress_for)
    size = config.incidents.pattern_features

    def pattern(features: list[str] | None) -> tuple[str, ...]:
        return tuple(sorted((features or [])[:size]))

    suppressed_by: dict[str, str] = {}
    if normal.height:
        patterns: dict[tuple, list[tuple[str, dt.datetime | None, int]]] = {}
        for reviewed_id, entity, features, end, keys in normal.select(
            "incident_id", "entity", "pattern", "incident_end", "row_keys"
        ).iter_rows():
            patterns.setdefault((entity, pattern(features)), []).append((reviewed_id, end, len(keys or [])))
        for this_id, entity, features, start, rows, verdict in judged.select(
            "incident_id", "entity", "top_features", "start", "rows", "verdict"
        ).iter_rows():
            if verdict is not None:
                continue
            for reviewed_id, end, reviewed_rows in patterns.get((entity, pattern(features)), []):
                if reviewed_id == this_id or rows > reviewed_rows:
                    continue
                if start is None or end is None or dt.timedelta(0) <= start - end <= window:
                    suppressed_by[this_id] = reviewed_id
                    break
    status = (
        pl.when(pl.col("verdict").is_not_null())
        .then(pl.lit("closed"))
        .when(pl.col("suppressed_by").is_not_null())
        .then(pl.lit("suppressed"))
        .otherwise(pl.lit("open"))
    )
    return judged.with_columns(
        pl.col("incident_id").replace_strict(suppressed_by, default=None, return_dtype=pl.String).alias("suppressed_by")
    ).with_columns(status.alias("status"))


def committed_partitions(config: PipelineConfig) -> list[str]:
    """The partitions the ledger holds, in the lake's order."""
    return partition_order(list(Ledger(config.output.ledger_uri).entries()))


def incident_rows(config: PipelineConfig, order: list[str] | None = None) -> pl.DataFrame:
    """Every flagged row of the committed partitions with its `incident_id`."""
    order = committed_partitions(config) if order is None else order
    columns = _ROW_COLUMNS + ([config.timestamp_column] if config.timestamp_column else [])
    return assign_incidents(read_flagged(config, order, columns), config, order)


def build_incidents(config: PipelineConfig, updated_at: dt.datetime | None = None) -> pl.DataFrame:
    """The incidents table as it stands: flagged rows of the committed partitions grouped into incidents, with
    their reviews; newest first."""
    rows = incident_rows(config)
    incidents = apply_reviews(summarise_incidents(rows, config), read_reviews(config), config)
    stamp = updated_at or dt.datetime.now(dt.UTC)
    incidents = incidents.with_columns(pl.lit(stamp, dtype=pl.Datetime("us", "UTC")).alias("updated_at"))
    incidents = incidents.select([pl.col(name).cast(dtype) for name, dtype in INCIDENT_COLUMNS.items()])
    return incidents.sort(["end", "peak_score"], descending=True, nulls_last=True)


def incidents_table_uri(config: PipelineConfig) -> str:
    return storage.join_uri(config.output.incidents_uri, PARTITION_FILE)


def write_incidents(config: PipelineConfig, previous: pl.DataFrame | None = None) -> IncidentCounts:
    """Rebuild the incidents table and replace `incidents/part-0.parquet` whole (one file that appears at once, on
    disk or S3); return its counts, with how many incidents are new since the table it replaced."""
    before = read_incidents(config) if previous is None else previous
    incidents = build_incidents(config)
    output = config.output
    parent, name = output.incidents_uri.rstrip("/").rsplit("/", 1)
    writer = parquet_io.PartitionWriter(parent, name, output.staging_uri, arrow_schema(INCIDENT_COLUMNS))
    try:
        writer.write(incidents.to_arrow())
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    known = set(before.get_column("incident_id").to_list())
    status = incidents.get_column("status")
    new = incidents.filter(~pl.col("incident_id").is_in(list(known)))
    return IncidentCounts(
        total=incidents.height,
        open=int((status == "open").sum()),
        closed=int((status == "closed").sum()),
        suppressed=int((status == "suppressed").sum()),
        new=new.height,
        new_suppressed=int((new.get_column("status") == "suppressed").sum()),
        uri=output.incidents_uri,
        opened=new.filter(pl.col("status") == "open").get_column("incident_id").to_list(),
    )


def read_incidents(config: PipelineConfig) -> pl.DataFrame:
    """The incidents table as last written (empty before the first)."""
    try:
        return parquet_io.read_partition(config.output.incidents_uri)
    except storage.LakeReadError:
        return pl.DataFrame(schema=INCIDENT_COLUMNS)
