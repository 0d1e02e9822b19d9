"""The contracts of the incident tables under `output.uri` (documented in the README's output contract).

- `flagged/<partition>/part-0.parquet`: the flagged rows of each scored partition (the scored-output columns plus
  `FLAGGED_COLUMNS`), replaced whole when the partition is scored again: incidents are rebuilt from it.
- `incidents/part-0.parquet`: one row per incident (`INCIDENT_COLUMNS`), rewritten whole after each scoring run.
- `reviews/<timestamp>-<id>.parquet`: verdicts (`REVIEW_COLUMNS`), one new file per write, never rewritten.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

#: Columns a flagged row carries besides the scored-output columns.
FLAGGED_COLUMNS: dict[str, pl.DataType] = {
    "row_key": pl.String(),
    "incident_entity": pl.String(),
    "source_partition": pl.String(),
    "row_position": pl.Int64(),
    "partition_rows": pl.Int64(),
}

#: One row per incident.
INCIDENT_COLUMNS: dict[str, pl.DataType] = {
    "incident_id": pl.String(),
    "entity": pl.String(),
    "start": pl.Datetime("us"),
    "end": pl.Datetime("us"),
    "first_row": pl.String(),
    "last_row": pl.String(),
    "rows": pl.Int64(),
    "peak_score": pl.Float64(),
    "mean_score": pl.Float64(),
    "min_pvalue": pl.Float64(),
    "top_features": pl.List(pl.String()),
    "partitions": pl.List(pl.String()),
    "model_versions": pl.List(pl.String()),
    "model_version": pl.String(),
    "status": pl.String(),
    "suppressed_by": pl.String(),
    "verdict": pl.String(),
    "verdict_note": pl.String(),
    "updated_at": pl.Datetime("us", "UTC"),
}

#: Statuses of an incident: still running at the end of the data, over, or reviewed normal before (same pattern).
INCIDENT_STATUSES = ("open", "closed", "suppressed")
#: What a reviewer can say about an incident or a row.
VERDICTS = ("normal", "anomaly")

#: One row per verdict: on an incident (`incident_id`, with the row keys it covered when marked) or on rows.
REVIEW_COLUMNS: dict[str, pl.DataType] = {
    "reviewed_at": pl.Datetime("us", "UTC"),
    "incident_id": pl.String(),
    "row_keys": pl.List(pl.String()),
    "entity": pl.String(),
    "pattern": pl.List(pl.String()),
    "incident_end": pl.Datetime("us"),
    "model_version": pl.String(),
    "verdict": pl.String(),
    "note": pl.String(),
    "source": pl.String(),
}


def arrow_schema(columns: dict[str, pl.DataType]) -> pa.Schema:
    """The one Arrow schema of every file of a table declared by `columns`."""
    return pl.DataFrame(schema=columns).to_arrow().schema


def empty(columns: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=columns)
