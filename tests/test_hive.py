"""Tests for the Hive layout: partition discovery, partition records, data files and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from sae_pipeline.hive import Partition, discover_partitions, partition_fingerprint
from sae_pipeline.parquet_io import read_partition
from sae_pipeline.storage import LakeReadError, join_uri
from tests.conftest import small_frame, write_file

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
        data,
        table,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("region", pa.string())]), flavor="hive"),
    )
    assert (table / "region=us%20east").is_dir()

    partitions = discover_partitions(str(table), ["region"])

    assert [dict(p.values)["region"] for p in partitions] == ["plain", "us east"]
    for partition in partitions:
        assert read_partition(partition.uri).height == 1


# --- records and fingerprints ----------------------------------------------------------------------------------


def test_partition_record_is_json_able(tmp_path):
    uri = str(tmp_path / "t/year=2026/day=2026-11-01")
    partition = Partition(values=(("year", "2026"), ("day", "2026-11-01")), name="year=2026/day=2026-11-01", uri=uri)
    record = partition.to_record()
    assert record == {
        "name": "year=2026/day=2026-11-01",
        "uri": partition.uri,
        "values": {"year": "2026", "day": "2026-11-01"},
    }
    assert json.loads(json.dumps(record)) == record


def test_partitions_compare_by_values_not_uri():
    a = Partition(values=(("day", "2026-11-01"),), name="day=2026-11-01", uri="/x/day=2026-11-01")
    b = Partition(values=(("day", "2026-11-01"),), name="day=2026-11-01", uri="s3://bucket/day=2026-11-01")
    c = Partition(values=(("day", "2026-11-02"),), name="day=2026-11-02", uri="/x/day=2026-11-02")
    assert a == b
    assert sorted([c, a]) == [a, c]


def test_fingerprint_follows_data_files_not_markers(tmp_path):
    folder = tmp_path / "t" / "day=2026-11-01"
    write_file(folder, small_frame(0))
    before = partition_fingerprint(str(folder))
    (folder / "_SUCCESS").write_text("marker")
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00")
    assert partition_fingerprint(str(folder)) == before
    write_file(folder, small_frame(0), "part-1.parquet")
    assert partition_fingerprint(str(folder)) != before
