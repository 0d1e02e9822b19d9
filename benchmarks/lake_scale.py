"""Shared set-up of the lake-scale benchmarks: a wide synthetic partition, its config and a trained champion.

The partition has `columns` float32 columns with a low-rank structure (8 hidden factors plus noise, so an SAE has
something to learn) and is written chunk by chunk, so generating a partition larger than memory stays cheap. A
partition of a fleet also has `host` and `event_time` columns, so that a config can judge rows in their context.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sae_pipeline import hive, pipeline, updating
from sae_pipeline.config import PipelineConfig, load_config
from sae_pipeline.records import PartitionRecord, PartitionResult

_FACTORS = 8
_CHUNK_ROWS = 262_144
#: The columns of a fleet's partition besides the metrics, as the config declares them.
FLEET_COLUMNS = [
    {"name": "host", "type": "string", "role": "identifier"},
    {"name": "event_time", "type": "datetime", "role": "timestamp"},
]


def column_names(columns: int) -> list[str]:
    return [f"metric_{index:02d}" for index in range(columns)]


def write_partition(
    folder: Path,
    rows: int,
    columns: int,
    seed: int = 0,
    one_row_group: bool = False,
    hosts: int = 0,
    day: dt.date | None = None,
) -> Path:
    """Write `rows` x `columns` float32 rows to `folder/part-0.parquet`: row groups of 256k rows, or the whole file
    as one row group (what pyarrow before 15 wrote by default, up to 64M rows). With `hosts`, rows are a fleet's
    readings spread evenly over `day`: `host` takes each of `hosts` in turn and `event_time` grows (`FLEET_COLUMNS`)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(_FACTORS, columns)).astype(np.float32)
    names = column_names(columns)
    schema = pa.schema([(name, pa.float32()) for name in names])
    if hosts:
        schema = pa.schema([("host", pa.string()), ("event_time", pa.timestamp("us")), *schema])
        host_names = np.array([f"host-{index:04d}" for index in range(hosts)], dtype=object)
        step_us = 86_400_000_000 // rows
    chunks = []
    for start in range(0, rows, _CHUNK_ROWS):
        n = min(_CHUNK_ROWS, rows - start)
        factors = rng.normal(size=(n, _FACTORS)).astype(np.float32)
        values = factors @ loadings + 0.1 * rng.normal(size=(n, columns)).astype(np.float32)
        table = dict(zip(names, values.T))
        if hosts:
            index = np.arange(start, start + n)
            table["host"] = host_names[index % hosts]
            table["event_time"] = np.datetime64(day, "us") + (index * step_us).astype("timedelta64[us]")
        chunks.append(pa.table(table, schema=schema))
    path = folder / "part-0.parquet"
    row_group_rows = rows if one_row_group else _CHUNK_ROWS
    pq.write_table(pa.concat_tables(chunks), path, row_group_size=max(row_group_rows, 1), compression="zstd")
    return path


def write_config(
    workdir: Path,
    lake: Path,
    columns: int,
    model: dict | None = None,
    fleet: bool = False,
    context: dict | None = None,
    scoring: dict | None = None,
) -> Path:
    """The config of a lake written by `write_partition` (`fleet`: with `hosts`), with a `model`, `context` and
    `scoring` section."""
    metrics = [{"name": name, "type": "float32", "role": "numeric"} for name in column_names(columns)]
    raw = {
        "name": "lake-scale-benchmark",
        "lake": {"uri": str(lake), "partition_keys": {"day": "date"}},
        "columns": (FLEET_COLUMNS if fleet else []) + metrics,
        "output": {"uri": str(workdir / "out")},
        "model": model or {},
        **({"context": context} if context else {}),
        **({"scoring": scoring} if scoring else {}),
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train_champion(config: PipelineConfig, partitions: list[PartitionRecord]) -> str:
    """Train the default model on a sample of the partitions (not timed) and return its version."""
    return updating.train_or_update(config, partitions).model_version


def prepared_champion(
    workdir: Path, lake: Path, columns: int, model: dict | None = None
) -> tuple[PipelineConfig, PartitionRecord, str]:
    """A config over `lake` with its outputs under `workdir` (`model`: settings of its `model` section) and a
    champion trained on the lake's first partition: (config, partition, version)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = load_config(write_config(workdir, lake, columns, model))
    partitions = hive.partition_records(config.lake)
    return config, partitions[0], train_champion(config, partitions[:1])


def score_once(config: PipelineConfig, partition: PartitionRecord, version: str) -> PartitionResult:
    """The pipeline's own scoring of one partition: raw Parquet in; scored, quarantine and drift report out."""
    return pipeline.score_partition(
        config, partition, version, "benchmark", dt.datetime.now(dt.UTC), reason="benchmark"
    )
