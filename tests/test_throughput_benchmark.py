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
