"""Delta Lake and Iceberg tables as input, Delta tables as output, through the library (no Prefect).

A small sample table gets an append to one partition, an overwrite of another and the delete of a third between
two scoring runs: only the changed partitions are scored again, the removed one's outputs go, and the ledger says
why and at which table version. The same on an Iceberg table in a SQLite catalog, and on S3 (moto's server).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from sae_pipeline import pipeline, tables, updating
from sae_pipeline.config import PipelineConfig, load_config
from sae_pipeline.ledger import Ledger
from sae_pipeline.sample_data import ICEBERG_TABLE, generate_day, generate_sample_table
from sae_pipeline.schema import scored_output_schema
from sae_pipeline.storage import LakeReadError
from sae_pipeline.tables import delta
from sae_pipeline.tables.iceberg import catalog_properties
from tests.conftest import SAMPLE_CONFIG, moto_s3

DAYS = ["day=2026-11-01", "day=2026-11-02", "day=2026-11-03"]
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _config(root: Path, lake: dict, output: dict) -> PipelineConfig:
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text())
    raw.update(lake=lake, output=output, training={"partitions": None, "max_rows": 5_000}, model={"max_steps": 40})
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _rows(day: str, rows: int, seed: int) -> pa.Table:
    date = dt.date.fromisoformat(day.removeprefix("day="))
    frame = generate_day(date, rows, seed).to_arrow()
    return frame.append_column("day", pa.array([date] * rows, pa.date32()))


def _score_run(config: PipelineConfig, as_of: int | None = None, threads: int = 1):
    """What a scoring run does, step by step: plan, score each partition (in `threads` at once), remove."""
    records = tables.partition_records(config.lake, as_of)
    version = pipeline.scoring_model(config).model_version
    plan = pipeline.plan_scoring(config, records, version)
    by_name = {record.name: record for record in records}
    with ThreadPoolExecutor(threads) as pool:
        scored = pool.map(
            lambda item: pipeline.score_partition(config, by_name[item[0]], version, "run-1", T0, item[1]),
            plan.to_score.items(),
        )
        results = list(scored)
    for name in plan.removed:
        pipeline.remove_partition_outputs(config, name)
    return plan, results


def _change_delta(uri: str) -> None:
    """Append to the first day, overwrite the second, delete the third (three commits)."""
    options = delta.storage_options(uri)
    write_deltalake(uri, _rows(DAYS[0], 50, seed=7), mode="append", storage_options=options)
    predicate = "day = '2026-11-02'"
    write_deltalake(uri, _rows(DAYS[1], 120, 8), mode="overwrite", predicate=predicate, storage_options=options)
    DeltaTable(uri, storage_options=options).delete("day = '2026-11-03'")


def _check_incremental_run(config: PipelineConfig, change, threads: int = 1) -> tuple[int, int]:
    """Score, rerun (nothing to do), `change` the table, score again: only the changed partitions are redone.
    Returns (table version of the first run, of the second)."""
    updating.train_or_update(config, tables.partition_records(config.lake))
    first, _ = _score_run(config, threads=threads)
    assert first.to_score == dict.fromkeys(DAYS, "new")
    assert not _score_run(config)[0].to_score
    before = {name: entry.table_version for name, entry in Ledger(config.output.ledger_uri).entries().items()}
    change()
    second, results = _score_run(config, threads=threads)
    after = tables.partition_records(config.lake)
    old, new = before[DAYS[0]], after[0].version
    assert second.to_score == {name: f"changed at table version {new} (scored at {old})" for name in DAYS[:2]}, (
        second.to_score
    )
    assert second.removed == [DAYS[2]] and not second.up_to_date
    entries = Ledger(config.output.ledger_uri).entries()
    assert set(entries) == set(DAYS[:2])
    assert {entry.table_version for entry in entries.values()} == {new}
    assert entries[DAYS[0]].reason.startswith("changed at table version")
    assert [result.rows_in for result in results] == [250, 120]
    first, second = after  # context history continues from the previous partition, at the same version
    source = tables.source_for(config.lake)
    assert first.previous_uri is None and second.previous_uri == first.uri
    assert sum(batch.num_rows for _, batch in source.iter_previous_batches(second, 100)) == 250
    return old, new


@pytest.fixture(scope="module")
def delta_lake(tmp_path_factory) -> PipelineConfig:
    root = tmp_path_factory.mktemp("delta")
    generate_sample_table(root / "lake", "delta", days=3, rows_per_day=200)
    return _config(root, {"format": "delta", "uri": "lake"}, {"uri": "out", "format": "delta"})


def test_delta_source_rescoring_only_changed_partitions_with_delta_outputs(delta_lake):
    config = delta_lake
    old, new = _check_incremental_run(config, lambda: _change_delta(config.lake.uri))

    scored = pl.scan_delta(config.output.scored_uri).collect()  # the contract, read back by polars
    assert scored.schema["day"] == pl.Date and set(scored["day"].unique()) == {
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 2),
    }
    scored_output_schema(config).validate(scored.drop("day"))
    ledger = Ledger(config.output.ledger_uri).entries()
    assert scored.height == sum(entry.rows_scored for entry in ledger.values())
    # and through the deltalake dataset (what duckdb and pyarrow scan; duckdb's delta extension cannot be installed)
    dataset = DeltaTable(config.output.scored_uri).to_pyarrow_dataset()
    assert dataset.count_rows() == scored.height and dataset.schema.field("anomaly_score").type == pa.float64()
    quarantine = pl.scan_delta(config.output.quarantine_uri).collect()
    assert quarantine.height == sum(entry.rows_quarantined for entry in ledger.values()) > 0

    history = DeltaTable(config.output.scored_uri).history()
    writes = [commit for commit in history if commit["operation"] == "WRITE"]
    assert all(commit["sae_pipeline.run_id"] == "run-1" for commit in writes)
    assert {commit["sae_pipeline.model_version"] for commit in writes} == {next(iter(ledger.values())).model_version}
    assert any(commit["operation"] == "DELETE" for commit in history)  # the removed partition's outputs

    # --as-of: the table as the first run saw it (three partitions, their first fingerprints, their first rows)
    then = tables.partition_records(config.lake, as_of=old)
    assert [record.name for record in then] == DAYS and {record.version for record in then} == {old}
    source = tables.source_for(config.lake)
    assert sum(batch.num_rows for _, batch in source.iter_batches(then[0], 64)) == 200
    assert tables.partition_records(config.lake, as_of=new)[0].fingerprint != then[0].fingerprint


def test_a_writer_killed_mid_commit_leaves_the_delta_output_at_its_previous_version(delta_lake):
    uri = delta_lake.output.scored_uri
    before = DeltaTable(uri)
    version, rows = before.version(), before.to_pyarrow_table().num_rows
    script = textwrap.dedent(
        f"""
        import os, signal, types, pyarrow as pa, pyarrow.dataset
        from deltalake import DeltaTable
        from sae_pipeline.tables import delta

        class Dying:  # the spool as delta-rs reads it, killing the process once delta-rs is inside the commit
            def __init__(self, path, format):
                self.dataset = pa.dataset.dataset(path, format=format)
            def scanner(self):
                return self
            def to_reader(self):
                def batches():
                    for number, batch in enumerate(self.dataset.to_batches()):
                        if number == 3:
                            os.kill(os.getpid(), signal.SIGKILL)
                        yield batch
                return pa.RecordBatchReader.from_batches(self.dataset.schema, batches())

        delta.pads = types.SimpleNamespace(dataset=Dying)
        table_schema = pa.schema(DeltaTable({uri!r}).schema().to_arrow())
        schema = pa.schema([field for field in table_schema if field.name != "day"])
        writer = delta.DeltaPartitionWriter({uri!r}, {{"day": "2026-11-01"}}, {{"day": "date"}}, schema, {{}})
        for _ in range(10):
            writer.write(pa.table({{field.name: pa.nulls(1000, field.type) for field in schema}}))
        writer.commit()
        """
    )
    process = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert process.returncode == -signal.SIGKILL
    after = DeltaTable(uri)
    assert after.version() == version and after.to_pyarrow_table().num_rows == rows
    assert pl.scan_delta(uri).filter(pl.col("anomaly_score").is_null()).collect().height == 0


def test_vacuum_removes_only_files_the_current_version_does_not_need(delta_lake):
    uri = delta_lake.output.scored_uri
    rows = DeltaTable(uri).to_pyarrow_table().num_rows
    live = set(DeltaTable(uri).file_uris())
    removed = delta.vacuum(uri, retention_hours=0)
    assert removed and not live & {os.path.join(uri, path) for path in removed}
    assert DeltaTable(uri).to_pyarrow_table().num_rows == rows


def _change_iceberg(config: PipelineConfig) -> None:
    """Append to the first day, overwrite the second, delete the third (three snapshots)."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.expressions import EqualTo

    settings = config.lake.iceberg_catalog
    table = load_catalog(settings.name, **catalog_properties(settings)).load_table(config.lake.table)
    table.append(_rows(DAYS[0], 50, seed=7))
    table.overwrite(_rows(DAYS[1], 120, seed=8), overwrite_filter=EqualTo("day", "2026-11-02"))
    table.delete(EqualTo("day", "2026-11-03"))


def test_iceberg_source_rescoring_only_changed_partitions(tmp_path_factory):
    root = tmp_path_factory.mktemp("iceberg")
    generate_sample_table(root / "lake", "iceberg", days=3, rows_per_day=200)
    catalog = {"uri": "sqlite:///lake/catalog.db", "warehouse": "lake/warehouse"}
    config = _config(root, {"format": "iceberg", "table": ICEBERG_TABLE, "catalog": catalog}, {"uri": "out"})
    old, _ = _check_incremental_run(config, lambda: _change_iceberg(config))
    scored = pl.scan_parquet(config.output.scored_uri, hive_partitioning=True).collect()
    assert "day" in scored.columns and scored.height == sum(
        entry.rows_scored for entry in Ledger(config.output.ledger_uri).entries().values()
    )
    then = tables.partition_records(config.lake, as_of=old)
    assert [record.name for record in then] == DAYS
    with pytest.raises(LakeReadError, match="has no such snapshot"):
        tables.partition_records(config.lake, as_of=12345)


def test_iceberg_on_s3_with_a_sqlite_catalog(tmp_path):
    from pyiceberg.catalog import load_catalog

    with moto_s3("icelake"):
        catalog = {"uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": "s3://icelake/warehouse"}
        lake = {"format": "iceberg", "table": "sample.telemetry", "catalog": catalog}
        config = _config(tmp_path, lake, {"uri": "s3://icelake/out"})
        writer = load_catalog("default", **catalog_properties(config.lake.iceberg_catalog))
        writer.create_namespace("sample")
        table = writer.create_table("sample.telemetry", schema=_rows(DAYS[0], 1, 0).schema)
        with table.update_spec() as spec:
            spec.add_identity("day")
        for day in DAYS:
            table.append(_rows(day, 200, seed=0))
        _check_incremental_run(config, lambda: _change_iceberg(config))


def test_delta_on_s3_with_concurrent_partition_commits(tmp_path):
    with moto_s3("lakehouse"):
        local = tmp_path / "local"
        generate_sample_table(local, "delta", days=3, rows_per_day=200)
        uri = "s3://lakehouse/raw"
        source = DeltaTable(str(local)).to_pyarrow_table()
        write_deltalake(uri, source, partition_by=["day"], storage_options=delta.storage_options(uri))
        config = _config(tmp_path, {"format": "delta", "uri": uri}, {"uri": "s3://lakehouse/out", "format": "delta"})
        _check_incremental_run(config, lambda: _change_delta(uri), threads=3)  # three commits to one table at once
        scored = DeltaTable(config.output.scored_uri, storage_options=delta.storage_options(uri))
        assert scored.to_pyarrow_table().num_rows == sum(
            entry.rows_scored for entry in Ledger(config.output.ledger_uri).entries().values()
        )


# --- one clean error each --------------------------------------------------------------------------------------


def test_errors_name_the_table_and_the_rule(tmp_path):
    lake = {"format": "delta", "uri": str(tmp_path / "missing")}
    config = _config(tmp_path, lake, {"uri": str(tmp_path / "out")})
    with pytest.raises(LakeReadError, match="no Delta table at .*missing"):
        tables.partition_records(config.lake)

    flat = tmp_path / "flat"
    write_deltalake(str(flat), pa.table({"x": [1.0]}))
    config = _config(tmp_path, {**lake, "uri": str(flat)}, {"uri": str(tmp_path / "out")})
    with pytest.raises(LakeReadError, match="flat has no partition columns"):
        tables.partition_records(config.lake)

    keyed = tmp_path / "keyed"
    write_deltalake(str(keyed), pa.table({"region": ["eu"], "x": [1.0]}), partition_by=["region"])
    config = _config(tmp_path, {**lake, "uri": str(keyed)}, {"uri": str(tmp_path / "out")})
    with pytest.raises(LakeReadError, match=r"set lake.partition_keys to \{region: string\}"):
        tables.partition_records(config.lake)

    catalog = {"uri": f"sqlite:///{tmp_path}/no/such/folder/catalog.db"}
    config = _config(tmp_path, {"format": "iceberg", "table": "a.b", "catalog": catalog}, {"uri": "out"})
    with pytest.raises(LakeReadError, match="cannot reach Iceberg catalog 'default' \\(sql at sqlite:"):
        tables.partition_records(config.lake)

    rest = {"type": "rest", "uri": "http://127.0.0.1:9"}  # nothing listens on the discard port
    config = _config(tmp_path, {"format": "iceberg", "table": "a.b", "catalog": rest}, {"uri": "out"})
    with pytest.raises(LakeReadError, match=r"cannot reach Iceberg catalog 'default' \(rest at http://127.0.0.1:9\)"):
        tables.partition_records(config.lake)

    parquet = _config(tmp_path, {"uri": str(tmp_path)}, {"uri": "out"})
    with pytest.raises(ValueError, match="--as-of needs lake.format delta or iceberg"):
        tables.partition_records(parquet.lake, as_of=3)


def test_a_column_added_to_a_delta_table_reads_as_nulls_in_older_files(tmp_path):
    uri = str(tmp_path / "evolving")
    day = pa.array([dt.date(2026, 11, 1)] * 2, pa.date32())
    write_deltalake(uri, pa.table({"day": day, "x": [1.0, 2.0]}), partition_by=["day"])
    newer = pa.table({"day": day, "x": [3.0, 4.0], "y": pa.array([5, 6], pa.int64())})
    write_deltalake(uri, newer, mode="append", schema_mode="merge")
    config = _config(tmp_path, {"format": "delta", "uri": uri}, {"uri": "out"})
    source = tables.source_for(config.lake)
    [partition] = source.partition_records()
    rows = pl.concat([pl.from_arrow(batch) for _, batch in source.iter_batches(partition, 10)]).sort("x")
    assert rows.columns == ["x", "y"] and rows["y"].to_list() == [None, None, 5, 6]


def test_the_lake_section_asks_for_what_each_format_needs(tmp_path):
    from sae_pipeline.config import LakeConfig

    with pytest.raises(ValueError, match="lake.format iceberg needs lake.table"):
        LakeConfig(format="iceberg")
    with pytest.raises(ValueError, match="only for lake.format iceberg"):
        LakeConfig(uri="lake", table="a.b")
    with pytest.raises(ValueError, match="lake.format delta needs lake.uri"):
        LakeConfig(format="delta")
    config = _config(
        tmp_path, {"format": "iceberg", "table": "a.b", "catalog": {"uri": "sqlite:///c.db"}}, {"uri": "o"}
    )
    assert config.lake.catalog.uri == f"sqlite:///{tmp_path / 'c.db'}"


def test_iceberg_day_and_hour_transforms_name_partitions_like_hive_keys(tmp_path):
    from pyiceberg.catalog import load_catalog
    from pyiceberg.transforms import DayTransform, HourTransform

    catalog = load_catalog("default", type="sql", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    catalog.create_namespace("ns")
    stamps = [dt.datetime(2026, 11, 1, 5, 30), dt.datetime(2026, 11, 2, 7, 0)]
    rows = pa.table({"event_time": pa.array(stamps, pa.timestamp("us")), "x": [1.0, 2.0]})
    for name, transform in (("by_day", DayTransform()), ("by_hour", HourTransform())):
        table = catalog.create_table(f"ns.{name}", schema=rows.schema)
        with table.update_spec() as spec:
            spec.add_field("event_time", transform)
        table.append(rows)
    lake = {"format": "iceberg", "catalog": {"uri": f"sqlite:///{tmp_path}/c.db"}}
    by_day = _config(
        tmp_path, {**lake, "table": "ns.by_day", "partition_keys": {"event_time_day": "date"}}, {"uri": "o"}
    )
    assert [r.name for r in tables.partition_records(by_day.lake)] == [
        "event_time_day=2026-11-01",
        "event_time_day=2026-11-02",
    ]
    by_hour = _config(tmp_path, {**lake, "table": "ns.by_hour"}, {"uri": "o"})
    with pytest.raises(LakeReadError, match=r"set lake.partition_keys to \{event_time_hour: string\}"):
        tables.partition_records(by_hour.lake)
    by_hour = _config(
        tmp_path, {**lake, "table": "ns.by_hour", "partition_keys": {"event_time_hour": "string"}}, {"uri": "o"}
    )
    [first, _] = tables.partition_records(by_hour.lake)
    assert first.name == "event_time_hour=2026-11-01-05"
    [(_, batch)] = list(tables.source_for(by_hour.lake).iter_batches(first, 10))
    assert batch.column("x").to_pylist() == [1.0] and "event_time" in batch.schema.names
