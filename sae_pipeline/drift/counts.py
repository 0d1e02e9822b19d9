"""Running counts of one column over a partition, batch by batch: what the column tests and pictures read.

Why counts: every drift test here works on counts (and, for Wasserstein, per-bin sums) over the reference's fixed
bins, so a partition is never sorted or kept in memory, and counts add up across batches: any split of a
partition into batches gives the same report as one batch. Per batch the work is vectorised and O(rows): numeric
values are counted into the reference's bins by :class:`.binning.Binner` (a grid lookup instead of a binary
search, built once per process for each column's edges: `.binning.shared_binner`) with their per-bin sums,
categorical values by ``value_counts``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sae_pipeline.drift.binning import shared_binner
from sae_pipeline.drift.common import category_counts, numeric_values, split_missing

#: Rows binned at a time (fits the CPU cache; measured ~1.6x faster than whole 2M-row columns).
CHUNK_ROWS = 1 << 16


class NumericCounts:
    """Running per-bin counts and sums of one numeric column (or of the anomaly scores), and its missing count."""

    def __init__(self, summary: dict):
        self.summary = summary
        self.edges = np.asarray(summary["edges"], dtype=float)
        # The reference's counts and sums as arrays once: the report reads them for every test and picture.
        self.reference_counts = np.asarray(summary["counts"], dtype=np.int64)
        self.reference_sums = np.asarray(summary["sums"], dtype=float)
        self.binner = shared_binner(self.edges)
        self.counts = np.zeros(self.edges.size + 1, dtype=np.int64)
        self.sums = np.zeros(self.edges.size + 1)
        self.n_rows = 0
        self.n_missing = 0

    def update(self, values: np.ndarray) -> None:
        # Slices that fit in the CPU cache: the binning makes several passes over its input.
        for start in range(0, len(values), CHUNK_ROWS):
            present, n_missing = split_missing(values[start : start + CHUNK_ROWS])
            counts, sums = self.binner.counts_and_sums(present)
            self.counts += counts
            self.sums += sums
            self.n_missing += n_missing
        self.n_rows += len(values)

    def update_column(self, series: pl.Series) -> None:
        self.update(numeric_values(series))


class CategoryCounts:
    """Running count per category (as a string; nulls under ``NULL_CATEGORY``) of one categorical column."""

    def __init__(self, summary: dict):
        self.summary = summary
        self.counts: dict[str, int] = {}
        self.n_rows = 0

    def update_column(self, series: pl.Series) -> None:
        for category, count in category_counts(series).items():
            self.counts[category] = self.counts.get(category, 0) + count
        self.n_rows += series.len()


ColumnState = NumericCounts | CategoryCounts


def counts_for(summary: dict) -> ColumnState:
    """Empty running counts for a reference column summary (see :mod:`.reference`)."""
    return NumericCounts(summary) if summary["kind"] == "numeric" else CategoryCounts(summary)
