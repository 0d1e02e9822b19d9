"""Tests for Parquet partitions: reading whole or in batches, and atomic partition writes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sae_pipeline import parquet_io
from sae_pipeline.hive import discover_partitions
from sae_pipeline.parquet_io import PARTITION_FILE, PartitionWriter, read_partition
from sae_pipeline.storage import LakeReadError, join_uri
from tests.conftest import small_frame, write_file


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def write_partition(frame: pl.DataFrame, table_uri: str, partition_name: str, staging_uri: str) -> str:
    """Publish `frame` as one partition through a `PartitionWriter`; return the folder's URI."""
    table = frame.to_arrow()
    writer = PartitionWriter(table_uri, partition_name, staging_uri, table.schema)
    writer.write(table)
    return writer.commit()


# --- reading --------------------------------------------------------------------------------------------------


def test_read_partition_concatenates_data_files_and_skips_hidden(tmp_path):
    folder = tmp_path / "t" / "day=2026-11-01"
    write_file(folder, small_frame(0), "part-0.parquet")
    write_file(folder, small_frame(5), "part-1.parquet")
    (folder / "_SUCCESS").write_text("marker")
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00\x01")
    frame = read_partition(str(folder))
    assert sorted(frame.get_column("id").to_list()) == list(range(10))
    assert frame.columns == ["id", "value"]  # partition keys are not added


def test_large_row_groups_stream_in_batches_with_every_row_in_order(tmp_path, monkeypatch):
    """Row groups over the size limit go through the buffered reader; small ones through the pre-buffered one."""
    folder = tmp_path / "t" / "day=2026-11-01"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    table = pa.table({"id": np.arange(25_000), "value": rng.standard_normal(25_000).astype(np.float32)})
    with pq.ParquetWriter(folder / "part-0.parquet", table.schema) as writer:
        writer.write_table(table.slice(0, 20_000), row_group_size=20_000)  # one large row group
        writer.write_table(table.slice(20_000), row_group_size=5_000)  # one small one
    metadata = pq.ParquetFile(folder / "part-0.parquet").metadata
    sizes = [parquet_io._compressed_size(metadata.row_group(i)) for i in (0, 1)]
    monkeypatch.setattr(parquet_io, "LARGE_ROW_GROUP_BYTES", (sizes[0] + sizes[1]) // 2)

    batches = [batch for _, batch in parquet_io.iter_partition_batches(str(folder), batch_rows=3_000)]

    assert max(batch.num_rows for batch in batches) == 3_000
    assert pa.Table.from_batches(batches).equals(table)


def test_read_corrupt_file_raises_naming_the_file(tmp_path):
    folder = tmp_path / "t" / "day=2026-11-01"
    folder.mkdir(parents=True)
    corrupt = folder / PARTITION_FILE
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(LakeReadError, match="cannot read Parquet file") as error:
        read_partition(str(folder))
    assert str(corrupt) in str(error.value)


def test_read_empty_or_missing_partition_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LakeReadError, match="no data files"):
        read_partition(str(tmp_path / "empty"))
    with pytest.raises(LakeReadError, match="no data files"):
        read_partition(str(tmp_path / "missing"))


def test_read_files_with_incompatible_schemas_raises(tmp_path):
    folder = tmp_path / "t" / "day=2026-11-01"
    write_file(folder, small_frame(0), "part-0.parquet")
    write_file(folder, pl.DataFrame({"other": ["a"]}), "part-1.parquet")
    with pytest.raises(LakeReadError, match="incompatible schemas"):
        read_partition(str(folder))


# --- writing --------------------------------------------------------------------------------------------------


def test_rewrite_replaces_partition_and_is_readable_by_polars_and_pyarrow(tmp_path):
    table = tmp_path / "out" / "scored"
    staging = tmp_path / "out" / "_staging"
    first = small_frame(0, 8)
    uri = write_partition(first, str(table), "day=2026-11-01", str(staging))
    write_partition(small_frame(100, 3), str(table), "day=2026-11-02", str(staging))
    assert uri == join_uri(str(table), "day=2026-11-01")
    assert read_partition(uri).equals(first)

    rerun = small_frame(50, 4)
    write_partition(rerun, str(table), "day=2026-11-01", str(staging))

    assert files_under(table) == ["day=2026-11-01/part-0.parquet", "day=2026-11-02/part-0.parquet"]
    assert read_partition(uri).equals(rerun)
    assert files_under(staging) == []  # no staging leftovers

    scanned = pl.scan_parquet(str(table), hive_partitioning=True, hive_schema={"day": pl.Date}).sort("id").collect()
    assert scanned.height == 7
    assert scanned.filter(pl.col("day") == dt.date(2026, 11, 1)).get_column("id").to_list() == [50, 51, 52, 53]
    assert scanned.filter(pl.col("day") == dt.date(2026, 11, 2)).get_column("id").to_list() == [100, 101, 102]

    dataset = ds.dataset(str(table), partitioning="hive", format="parquet")
    arrow = dataset.to_table()
    assert arrow.num_rows == 7
    assert sorted(arrow.column("id").to_pylist()) == [50, 51, 52, 53, 100, 101, 102]


def test_dictionaries_only_where_values_repeat_and_for_names_in_nested_columns(tmp_path):
    rng = np.random.default_rng(0)
    rows = 20_000
    frame = pl.DataFrame(
        {
            "host": rng.choice(["web-1", "web-2", "db-1"], rows),
            "hour": rng.integers(0, 24, rows),
            "latency": rng.random(rows),  # never repeats
            "reading": rng.integers(0, 4_000, rows) / 10,  # 87% distinct in 1,000 rows, 37% in 10,000: repeats
            "id": np.arange(rows),
            "why": [[f"column_{i % 7}", "cpu"] for i in range(rows)],
            "detail": [{"column": f"column_{i % 7}", "share": float(i)} for i in range(rows)],
        }
    )
    uri = write_partition(frame, str(tmp_path / "t"), "day=2026-11-01", str(tmp_path / "staging"))
    footer = pq.read_metadata(Path(uri) / PARTITION_FILE).row_group(0)
    encodings = {footer.column(i).path_in_schema: footer.column(i).encodings for i in range(footer.num_columns)}
    with_dictionary = {path for path, used in encodings.items() if "RLE_DICTIONARY" in used}
    assert with_dictionary == {"host", "hour", "reading", "why.list.element", "detail.column"}, encodings
    assert read_partition(uri).equals(frame)


def test_write_removes_stale_data_files_but_keeps_markers(tmp_path):
    table = tmp_path / "table"
    folder = table / "day=2026-11-01"
    write_file(folder, small_frame(0), "part-1.parquet")
    write_file(folder, small_frame(0), "data-from-old-writer.parquet")
    (folder / "_SUCCESS").write_text("marker")

    write_partition(small_frame(7, 2), str(table), "day=2026-11-01", str(tmp_path / "_staging"))

    assert sorted(os.listdir(folder)) == ["_SUCCESS", PARTITION_FILE]
    assert read_partition(str(folder)).get_column("id").to_list() == [7, 8]


def test_write_removes_zero_byte_stale_files(tmp_path):
    table = tmp_path / "table"
    folder = table / "day=2026-11-01"
    folder.mkdir(parents=True)
    (folder / "part-1.parquet").write_bytes(b"")

    write_partition(small_frame(0, 2), str(table), "day=2026-11-01", str(tmp_path / "_staging"))

    assert os.listdir(folder) == [PARTITION_FILE]
    assert ds.dataset(str(table), partitioning="hive", format="parquet").to_table().num_rows == 2


def test_write_multi_key_partition_and_empty_frame(tmp_path):
    table = tmp_path / "table"
    empty = pl.DataFrame(schema={"id": pl.Int64, "value": pl.Float64})
    write_partition(empty, str(table), "year=2026/day=2026-11-01", str(tmp_path / "_staging"))
    partitions = discover_partitions(str(table), ["year", "day"])
    assert [p.name for p in partitions] == ["year=2026/day=2026-11-01"]
    back = read_partition(partitions[0].uri)
    assert back.height == 0
    assert back.schema == empty.schema
