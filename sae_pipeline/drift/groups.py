"""Anomaly rates per context group (a host, a customer): which groups moved, which are new or judged by the fleet.

With a `context` that forms baseline groups, a partition's flagged rate is broken down by group, so that one host
that went wrong is visible even when the fleet's rate is normal. Groups are ranked by how far their flagged rate
is from the target, in binomial standard errors (a small group's few flags are noise; a large group's are not).
Each group also carries its null shares beside its usual ones, and its baseline (`context.BASELINE_*`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from sae_pipeline.context import BASELINE_FEW_ROWS, BASELINE_NEW_GROUP

#: How many groups a report lists (most moved first), and how many new or fallback group names.
TOP_GROUPS = 20


@dataclass
class GroupBatch:
    """One scored batch seen by group: each row's group key and `BASELINE_*` status, whether it was flagged, its
    nulls in the nullable model columns (n_rows, n_nullable) and its group's usual null rates (same shape)."""

    keys: pl.Series
    baseline: np.ndarray
    nullable_columns: list[str]
    nulls: np.ndarray
    usual_null_rates: np.ndarray


class GroupCounts:
    """Rows, flags and nulls per group, added batch by batch (any split of a partition gives the same totals)."""

    def __init__(self, nullable_columns: list[str]):
        self.nullable_columns = nullable_columns
        self._groups: dict[str, dict] = {}

    def update(self, batch: GroupBatch, flagged: np.ndarray) -> None:
        width = len(self.nullable_columns)
        frame = pl.DataFrame(
            {
                "group": batch.keys,
                "baseline": batch.baseline,
                "flagged": np.asarray(flagged, dtype=np.int64),
                **{f"null_{i}": batch.nulls[:, i].astype(np.int64) for i in range(width)},
                **{f"usual_{i}": batch.usual_null_rates[:, i] for i in range(width)},
            }
        )
        totals = frame.group_by("group").agg(
            pl.len().alias("rows"),
            pl.col("flagged").sum(),
            pl.col("baseline").first(),
            *[pl.col(f"null_{i}").sum() for i in range(width)],
            *[pl.col(f"usual_{i}").first() for i in range(width)],
        )
        for row in totals.iter_rows(named=True):
            seen = self._groups.setdefault(
                row["group"], {"rows": 0, "flagged": 0, "nulls": np.zeros(width, dtype=np.int64)}
            )
            seen["rows"] += row["rows"]
            seen["flagged"] += row["flagged"]
            seen["nulls"] += np.array([row[f"null_{i}"] for i in range(width)], dtype=np.int64)
            seen["baseline"] = row["baseline"]
            seen["usual"] = [row[f"usual_{i}"] for i in range(width)]

    def section(self, expected_rate: float | None) -> dict | None:
        """The report's `groups` section (None when no batch came with groups)."""
        if not self._groups:
            return None
        entries = [self._entry(name, seen, expected_rate) for name, seen in self._groups.items()]
        entries.sort(key=lambda entry: (-(entry["z_score"] or 0.0), -entry["rate"], entry["group"]))
        baselines = [entry["baseline"] for entry in entries]
        return {
            "n_groups": len(entries),
            "baselines": {status: baselines.count(status) for status in sorted(set(baselines))},
            "new_groups": sorted(e["group"] for e in entries if e["baseline"] == BASELINE_NEW_GROUP)[:TOP_GROUPS],
            "few_rows_groups": sorted(e["group"] for e in entries if e["baseline"] == BASELINE_FEW_ROWS)[:TOP_GROUPS],
            "top": entries[:TOP_GROUPS],
        }

    def _entry(self, name: str, seen: dict, expected_rate: float | None) -> dict:
        rows, flagged = seen["rows"], seen["flagged"]
        rate = flagged / rows if rows else 0.0
        z_score = None
        if expected_rate and rows:
            z_score = (rate - expected_rate) / math.sqrt(expected_rate * (1.0 - expected_rate) / rows)
        return {
            "group": name,
            "baseline": seen["baseline"],
            "n_rows": rows,
            "n_flagged": flagged,
            "rate": rate,
            "z_score": z_score,
            "null_shares": {c: float(n) / rows for c, n in zip(self.nullable_columns, seen["nulls"])},
            "usual_null_shares": dict(zip(self.nullable_columns, (float(u) for u in seen["usual"]))),
        }
