"""The review table `reviews/`: verdicts on incidents and rows, append-only.

Each write is one new Parquet file, `reviews/<UTC time>-<random>.parquet`, that appears whole or not at all
(`storage.write_bytes`: staged, then moved into place, on disk or S3); nothing is ever rewritten, so the table is the
history of every verdict and `pl.read_parquet("reviews/*.parquet")` or duckdb reads it. The latest verdict on an
incident or a row wins. An incident verdict keeps the row keys, entity, pattern and end the incident had when it was
reviewed: rows confirmed anomalous stay out of training even if the incident later grows, and a `normal` verdict
keeps suppressing the same pattern.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sae_pipeline import storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.incidents.contract import REVIEW_COLUMNS, VERDICTS, arrow_schema


class ReviewError(ValueError):
    """A verdict that cannot be recorded (unknown incident, bad verdict, unreadable import file): one line says why."""


def read_reviews(config: PipelineConfig) -> pl.DataFrame:
    """Every verdict ever recorded, oldest first."""
    frames = []
    for uri in storage.list_files(config.output.reviews_uri, ".parquet"):
        frames.append(pl.from_arrow(pq.read_table(io.BytesIO(storage.read_bytes(uri)))))
    if not frames:
        return pl.DataFrame(schema=REVIEW_COLUMNS)
    return pl.concat(frames, how="vertical").select(list(REVIEW_COLUMNS)).sort("reviewed_at", maintain_order=True)


def append_reviews(config: PipelineConfig, verdicts: pl.DataFrame) -> str:
    """Add `verdicts` (`REVIEW_COLUMNS`; `reviewed_at` filled if null) as one new file; return its URI."""
    now = dt.datetime.now(dt.UTC)
    frame = verdicts.with_columns(pl.col("reviewed_at").fill_null(pl.lit(now, dtype=pl.Datetime("us", "UTC"))))
    frame = frame.select([pl.col(name).cast(dtype) for name, dtype in REVIEW_COLUMNS.items()])
    buffer = io.BytesIO()
    pq.write_table(frame.to_arrow().cast(arrow_schema(REVIEW_COLUMNS)), buffer, compression="zstd")
    uri = storage.join_uri(config.output.reviews_uri, f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet")
    storage.write_bytes(uri, buffer.getvalue())
    return uri


def incident_verdicts(reviews: pl.DataFrame) -> pl.DataFrame:
    """The latest verdict on each reviewed incident (with the entity, pattern and end recorded with it)."""
    on_incidents = reviews.filter(pl.col("incident_id").is_not_null())
    return on_incidents.group_by("incident_id", maintain_order=True).last()


def row_verdicts(reviews: pl.DataFrame) -> pl.DataFrame:
    """The latest verdict on each reviewed row key, whether given on the row or on its incident."""
    rows = reviews.select("reviewed_at", "row_keys", "verdict").explode("row_keys").drop_nulls("row_keys")
    return rows.rename({"row_keys": "row_key"}).group_by("row_key", maintain_order=True).last()


def confirmed_anomaly_keys(config: PipelineConfig) -> set[str]:
    """Keys of the rows whose latest verdict is `anomaly`: they never enter training, replay or the kNN reference."""
    verdicts = row_verdicts(read_reviews(config))
    return set(verdicts.filter(pl.col("verdict") == "anomaly").get_column("row_key").to_list())


def _check_verdict(verdict: str, where: str) -> str:
    if verdict not in VERDICTS:
        raise ReviewError(f"{where}: {verdict!r} is not a verdict; use one of: {', '.join(VERDICTS)}")
    return verdict


def resolve_incident(incidents: pl.DataFrame, ref: str, where: str) -> dict:
    """The incident whose id is `ref` or starts with it (a unique prefix)."""
    matches = incidents.filter(pl.col("incident_id").str.starts_with(ref))
    exact = matches.filter(pl.col("incident_id") == ref)
    if exact.height == 1:
        return exact.row(0, named=True)
    if matches.height == 1:
        return matches.row(0, named=True)
    if matches.height == 0:
        raise ReviewError(f"{where}: no incident {ref!r} (see `sae-pipeline review list`)")
    raise ReviewError(f"{where}: {ref!r} matches {matches.height} incidents; give more of the id")


def incident_verdict(incident: dict, row_keys: list[str], verdict: str, note: str | None, source: str) -> dict:
    """A review row for a verdict on `incident` (a row of the incidents table) covering `row_keys`."""
    return {
        "reviewed_at": None,
        "incident_id": incident["incident_id"],
        "row_keys": row_keys,
        "entity": incident["entity"],
        "pattern": incident["top_features"],
        "incident_end": incident["end"],
        "model_version": incident["model_version"],
        "verdict": verdict,
        "note": note,
        "source": source,
    }


def rows_verdict(row_keys: list[str], verdict: str, note: str | None, source: str) -> dict:
    """A review row for a verdict on individual rows."""
    return {
        "reviewed_at": None,
        "incident_id": None,
        "row_keys": row_keys,
        "entity": None,
        "pattern": None,
        "incident_end": None,
        "model_version": None,
        "verdict": verdict,
        "note": note,
        "source": source,
    }


def mark(
    config: PipelineConfig,
    incidents: pl.DataFrame,
    rows: pl.DataFrame,
    verdict: str,
    incident: str | None = None,
    row_keys: list[str] | None = None,
    note: str | None = None,
) -> dict:
    """Record one verdict on an incident (id or unique prefix) or on rows (keys); `rows` are the flagged rows with
    their `incident_id` (`build.incident_rows`). Return the review row written."""
    _check_verdict(verdict, "verdict")
    if incident is not None:
        found = resolve_incident(incidents, incident, "review mark")
        keys = rows.filter(pl.col("incident_id") == found["incident_id"]).get_column("row_key").to_list()
        record = incident_verdict(found, keys, verdict, note, "cli")
    else:
        if not row_keys:
            raise ReviewError("review mark: name an incident id, or row keys with --rows")
        record = rows_verdict(list(row_keys), verdict, note, "cli")
    append_reviews(config, pl.DataFrame([record], schema=REVIEW_COLUMNS))
    return record


def read_verdict_file(path: str) -> pl.DataFrame:
    """A CSV or Parquet file of verdicts (columns `incident_id` or `row_key`, `verdict`, optional `note`), as
    strings; raises `ReviewError` naming the file."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".csv":
            frame = pl.read_csv(io.BytesIO(storage.read_bytes(path)), infer_schema=False)
        elif suffix == ".parquet":
            frame = pl.read_parquet(io.BytesIO(storage.read_bytes(path)))
        else:
            raise ReviewError(f"{path}: expected a .csv or .parquet file of verdicts")
    except storage.LakeReadError as error:
        raise ReviewError(str(error)) from None
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ReviewError(f"{path}: cannot read verdicts: {' '.join(str(error).split())}") from None
    return frame


def import_verdicts(config: PipelineConfig, path: str, incidents: pl.DataFrame, rows: pl.DataFrame) -> tuple[int, int]:
    """Record every verdict of a CSV or Parquet file in one write, or none: the first bad row raises `ReviewError`
    naming the file, the row (1 = first data row) and the column. Return (incident verdicts, row verdicts)."""
    frame = read_verdict_file(path)
    targets = [name for name in ("incident_id", "row_key") if name in frame.columns]
    if not targets:
        raise ReviewError(f"{path}: needs a column incident_id or row_key (found: {', '.join(frame.columns)})")
    if "verdict" not in frame.columns:
        raise ReviewError(f"{path}: needs a column verdict (found: {', '.join(frame.columns)})")
    frame = frame.with_columns(pl.col(name).cast(pl.String) for name in [*targets, "verdict"])
    has_note = "note" in frame.columns
    records, counts = [], [0, 0]
    for number, row in enumerate(frame.iter_rows(named=True), start=1):
        given = [name for name in targets if row[name] not in (None, "")]
        if len(given) != 1:
            raise ReviewError(f"{path}: row {number}, column {' or '.join(targets)}: give exactly one of them")
        verdict = (row["verdict"] or "").strip().lower()
        _check_verdict(verdict, f"{path}: row {number}, column verdict")
        note = str(row["note"]) if has_note and row["note"] is not None else None
        source = f"import:{Path(path).name}"
        if given[0] == "incident_id":
            found = resolve_incident(incidents, row["incident_id"].strip(), f"{path}: row {number}, column incident_id")
            keys = rows.filter(pl.col("incident_id") == found["incident_id"]).get_column("row_key").to_list()
            records.append(incident_verdict(found, keys, verdict, note, source))
            counts[0] += 1
        else:
            records.append(rows_verdict([row["row_key"].strip()], verdict, note, source))
            counts[1] += 1
    if records:
        append_reviews(config, pl.DataFrame(records, schema=REVIEW_COLUMNS))
    return counts[0], counts[1]


def precision_by_version(reviews: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """Per model version (the one that flagged most of an incident's rows when it was reviewed): (incidents whose
    latest verdict is `anomaly`, incidents reviewed). From the review table, so incidents that a later rescoring no
    longer flags still count for the version that raised them."""
    verdicts = incident_verdicts(reviews).drop_nulls("model_version")
    counted = verdicts.group_by("model_version").agg(
        (pl.col("verdict") == "anomaly").sum().alias("confirmed"), pl.len().alias("reviewed")
    )
    return {version: (int(ok), int(total)) for version, ok, total in counted.iter_rows()}
