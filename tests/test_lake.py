"""Tests for lake I/O: Hive partition discovery, reading, atomic partition writes and small JSON objects."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sae_pipeline import lake
from sae_pipeline.lake import (
    PARTITION_FILE,
    LakeReadError,
    Partition,
    discover_partitions,
    join_uri,
    read_json,
    read_partition,
    write_json,
    write_partition,
)


def write_file(folder: Path, frame: pl.DataFrame, name: str = PARTITION_FILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(frame.to_arrow(), path)
    return path


def small_frame(start: int, n: int = 5) -> pl.DataFrame:
    return pl.DataFrame({"id": np.arange(start, start + n, dtype=np.int64), "value": np.linspace(0.0, 1.0, n)})


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


# --- discovery ------------------------------------------------------------------------------------------------


def test_discover_single_key_sorted_and_ignores_non_partitions(tmp_path):
    table = tmp_path / "table"
    for day in ["2026-11-03", "2026-11-01", "2026-11-02"]:
        write_file(table / f"day={day}", small_frame(0))
    write_file(table / "_staging" / "day=2026-11-09", small_frame(0))
    write_file(table / "_staging", small_frame(0), "abc.parquet")
    write_file(table / ".hidden", small_frame(0))
    write_file(table / "month=2026-11", small_frame(0))  # another key
    write_file(table / "not_a_partition", small_frame(0))
    (table / "day=2026-11-04.parquet").write_bytes(b"a file, not a folder")

    partitions = discover_partitions(str(table), ["day"])

    assert [p.name for p in partitions] == ["day=2026-11-01", "day=2026-11-02", "day=2026-11-03"]
    assert partitions[0].values == (("day", "2026-11-01"),)
    assert partitions[0].uri == join_uri(str(table), "day=2026-11-01")
    assert read_partition(partitions[0].uri).equals(small_frame(0))


def test_discover_multi_key_follows_key_order(tmp_path):
    table = tmp_path / "table"
    write_file(table / "year=2026" / "day=2026-11-02", small_frame(0))
    write_file(table / "year=2026" / "day=2026-11-01", small_frame(0))
    write_file(table / "year=2025" / "day=2025-12-31", small_frame(0))
    write_file(table / "year=2025" / "hour=3", small_frame(0))  # wrong key at depth 2
    write_file(table / "day=2026-11-05", small_frame(0))  # keys in the wrong order
    write_file(table / "day=2026-11-05" / "year=2026", small_frame(0))
    write_file(table / "year=2024", small_frame(0))  # too shallow: no day level
    write_file(table / "year=2026" / "_tmp" / "day=2026-11-03", small_frame(0))

    partitions = discover_partitions(str(table), ["year", "day"])

    assert [p.name for p in partitions] == [
        "year=2025/day=2025-12-31",
        "year=2026/day=2026-11-01",
        "year=2026/day=2026-11-02",
    ]
    assert dict(partitions[1].values) == {"year": "2026", "day": "2026-11-01"}
    assert partitions[1].uri == str(table / "year=2026" / "day=2026-11-01")


def test_discover_sample_lake_has_ten_days():
    root = Path(__file__).resolve().parents[1] / "sample_data" / "telemetry"
    partitions = discover_partitions(str(root), ["day"])
    assert len(partitions) == 10
    assert partitions[0].name == "day=2026-11-01"
    assert partitions[-1].name == "day=2026-11-10"


def test_discover_empty_table_returns_no_partitions(tmp_path):
    (tmp_path / "empty").mkdir()
    assert discover_partitions(str(tmp_path / "empty"), ["day"]) == []


def test_discover_missing_table_raises_naming_it(tmp_path):
    missing = str(tmp_path / "no_such_table")
    with pytest.raises(LakeReadError, match="not found") as error:
        discover_partitions(missing, ["day"])
    assert missing in str(error.value)


def test_discover_table_that_is_a_file_raises(tmp_path):
    path = tmp_path / "table"
    path.write_text("x")
    with pytest.raises(LakeReadError, match="not a folder"):
        discover_partitions(str(path), ["day"])


def test_discover_percent_encoded_partition_values_point_at_the_real_folder(tmp_path):
    table = tmp_path / "table"
    data = pa.table({"x": [1, 2], "region": ["us east", "plain"]})
    ds.write_dataset(
        data, table, format="parquet",
        partitioning=ds.partitioning(pa.schema([("region", pa.string())]), flavor="hive"),
    )
    assert (table / "region=us%20east").is_dir()

    partitions = discover_partitions(str(table), ["region"])

    assert [dict(p.values)["region"] for p in partitions] == ["plain", "us east"]
    for partition in partitions:
        assert read_partition(partition.uri).height == 1


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
    sizes = [lake._compressed_size(pq.ParquetFile(folder / "part-0.parquet").metadata.row_group(i)) for i in (0, 1)]
    monkeypatch.setattr(lake, "LARGE_ROW_GROUP_BYTES", (sizes[0] + sizes[1]) // 2)

    batches = [batch for _, batch in lake.iter_partition_batches(str(folder), batch_rows=3_000)]

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

    scanned = (
        pl.scan_parquet(str(table), hive_partitioning=True, hive_schema={"day": pl.Date})
        .sort("id")
        .collect()
    )
    assert scanned.height == 7
    assert scanned.filter(pl.col("day") == dt.date(2026, 11, 1)).get_column("id").to_list() == [50, 51, 52, 53]
    assert scanned.filter(pl.col("day") == dt.date(2026, 11, 2)).get_column("id").to_list() == [100, 101, 102]

    dataset = ds.dataset(str(table), partitioning="hive", format="parquet")
    arrow = dataset.to_table()
    assert arrow.num_rows == 7
    assert sorted(arrow.column("id").to_pylist()) == [50, 51, 52, 53, 100, 101, 102]


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


# --- small objects and records --------------------------------------------------------------------------------


def test_write_json_read_json_round_trip(tmp_path):
    uri = str(tmp_path / "runs" / "nested" / "run.json")
    payload = {"a": 1, "b": [1.5, "x", None], "c": {"d": True}}
    write_json(uri, payload)
    assert read_json(uri) == payload
    write_json(uri, {"a": 2})  # overwrite in place
    assert read_json(uri) == {"a": 2}
    assert os.listdir(tmp_path / "runs" / "nested") == ["run.json"]  # no temporary files left


def test_write_json_rejects_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(str(tmp_path / "x.json"), {"a": float("nan")})


def test_read_json_missing_raises_lake_read_error(tmp_path):
    missing = str(tmp_path / "absent.json")
    with pytest.raises(LakeReadError, match="absent.json"):
        read_json(missing)


def test_partition_record_round_trip_through_json(tmp_path):
    partition = Partition(values=(("year", "2026"), ("day", "2026-11-01")), name="year=2026/day=2026-11-01", uri=str(tmp_path / "t/year=2026/day=2026-11-01"))
    record = partition.to_record()
    assert record == {
        "name": "year=2026/day=2026-11-01",
        "uri": partition.uri,
        "values": {"year": "2026", "day": "2026-11-01"},
    }
    back = Partition.from_record(json.loads(json.dumps(record)))
    assert back == partition
    assert back.uri == partition.uri
    assert back.name == partition.name


def test_partitions_compare_by_values_not_uri():
    a = Partition(values=(("day", "2026-11-01"),), name="day=2026-11-01", uri="/x/day=2026-11-01")
    b = Partition(values=(("day", "2026-11-01"),), name="day=2026-11-01", uri="s3://bucket/day=2026-11-01")
    c = Partition(values=(("day", "2026-11-02"),), name="day=2026-11-02", uri="/x/day=2026-11-02")
    assert a == b
    assert sorted([c, a]) == [a, c]


def test_join_uri_normalises_slashes():
    assert join_uri("s3://bucket/root/", "/day=1/", "part-0.parquet") == "s3://bucket/root/day=1/part-0.parquet"
