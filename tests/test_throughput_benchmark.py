"""The throughput benchmark's stand-in score columns follow the scored contract (benchmarks/throughput.py).

The benchmark writes them to measure the I/O floor; when the contract gained columns and they did not, `make
bench` failed at its first round.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from sae_pipeline.schema import SCORE_COLUMNS
from tests.conftest import benchmark_module

throughput = benchmark_module("throughput")


def test_stand_in_score_columns_have_the_contract_names_and_types():
    columns = throughput.score_columns_like(5, ["metric_00", "metric_01"])
    frame = pl.from_arrow(pa.table(columns))
    assert frame.height == 5
    assert dict(frame.schema) == dict(SCORE_COLUMNS)


def test_report_has_a_table_per_partition_size_with_the_targets():
    def result(rows: int) -> dict:
        peers = {"polars + scikit-learn IsolationForest": [2.0], "polars + PyOD AutoEncoder": [8.0]}
        return {
            "rows": rows,
            "columns": 32,
            "file_mb": 1.0,
            "torch_threads": 2,
            "pyarrow_copy_seconds": [1.0],
            "scored_io_floor_seconds": [1.25],
            "ratio_ceiling": 0.8,
            "pyarrow_copy_rows_per_s": rows,
            "pipeline_seconds": {name: [4.0] for name in throughput.VARIANTS},
            "peer_seconds": peers,
            "pipeline_vs_peer": {name: seconds[0] / 4.0 for name, seconds in peers.items()},
        }

    text = throughput.markdown({"partitions": [result(1_000_000), result(60_000)]}, "python benchmarks/throughput.py")
    assert "### 1,000,000 rows" in text and "### 60,000 rows" in text
    assert "polars + scikit-learn IsolationForest **0.50x** (target >= 1)" in text
    assert "polars + PyOD AutoEncoder **2.00x** (target >= 2)" in text
    assert "0.250 (target >= 0.3)" in text and "0.250 (target >= 0.5)" in text
