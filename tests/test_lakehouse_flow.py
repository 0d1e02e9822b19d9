"""The flow end to end on a Delta table (Delta outputs, `as_of`, a Dask worker) and on an Iceberg table, and the
command line's one-line errors for table formats. The incremental behaviour is tested in `test_tables.py`."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from flows.lake_pipeline import lake_pipeline
from sae_pipeline import tables
from sae_pipeline.config import load_config
from sae_pipeline.ledger import Ledger
from sae_pipeline.runs import RunSummary, format_summary
from sae_pipeline.sample_data import ICEBERG_TABLE, generate_sample_table
from sae_pipeline.schema import scored_output_schema
from tests.conftest import SAMPLE_CONFIG, run_cli
from tests.test_cli_preflight import _one_error


def _write_config(root: Path, lake: dict, output: dict, **scoring) -> Path:
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text())
    raw.update(lake=lake, output=output, training={"partitions": None, "max_rows": 5_000}, model={"max_steps": 60})
    if scoring:
        raw["scoring"] = {**raw.get("scoring", {}), **scoring}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.usefixtures("prefect_harness")
def test_flow_on_a_delta_table_writes_delta_outputs_and_reads_as_of_on_dask(tmp_path):
    generate_sample_table(tmp_path / "lake", "delta", days=2, rows_per_day=300)
    config_path = _write_config(
        tmp_path,
        {"format": "delta", "uri": "lake"},
        {"uri": "out", "format": "delta"},
        task_runner="dask",
        dask_workers=1,
    )
    config = load_config(config_path)
    first = RunSummary.model_validate(lake_pipeline(str(config_path)))
    assert first.totals["rows_in"] == 600 and not first.failed
    assert "scored partitions (a Delta table)" in format_summary(first)
    scored = pl.scan_delta(config.output.scored_uri).collect()
    assert scored.height == first.totals["rows_scored"] and scored.schema["day"] == pl.Date
    scored_output_schema(config).validate(scored.drop("day"))

    lake = config.lake.uri
    first_day = DeltaTable(lake).to_pyarrow_table(partitions=[("day", "=", "2026-11-01")])
    write_deltalake(lake, first_day.slice(0, 10), mode="append")  # version 2
    as_of = RunSummary.model_validate(lake_pipeline(str(config_path), mode="score", as_of=1))  # before the append
    assert as_of.partitions == [] and len(as_of.up_to_date) == 2
    latest = RunSummary.model_validate(lake_pipeline(str(config_path), mode="score"))
    assert [(p.partition, p.rows_in) for p in latest.partitions] == [("day=2026-11-01", 310)]
    assert Ledger(config.output.ledger_uri).entries()["day=2026-11-01"].table_version == 2


@pytest.mark.usefixtures("prefect_harness")
def test_flow_on_an_iceberg_table_scores_like_parquet(tmp_path):
    generate_sample_table(tmp_path / "lake", "iceberg", days=2, rows_per_day=300)
    catalog = {"uri": "sqlite:///lake/catalog.db", "warehouse": "lake/warehouse"}
    config_path = _write_config(
        tmp_path, {"format": "iceberg", "table": ICEBERG_TABLE, "catalog": catalog}, {"uri": "out"}
    )
    summary = RunSummary.model_validate(lake_pipeline(str(config_path)))
    assert summary.totals["rows_in"] == 600 and not summary.failed
    entries = Ledger(load_config(config_path).output.ledger_uri).entries()
    assert {entry.table_version for entry in entries.values()} == {_snapshot(config_path)}
    again = RunSummary.model_validate(lake_pipeline(str(config_path)))
    assert again.partitions == [] and len(again.up_to_date) == 2


def _snapshot(config_path: Path) -> int:
    return tables.partition_records(load_config(config_path).lake)[0].version


def test_the_command_line_names_a_missing_table_and_a_wrong_as_of_in_one_line(tmp_path):
    missing = _write_config(tmp_path, {"format": "delta", "uri": "nowhere"}, {"uri": "out"})
    error = _one_error(run_cli("run", "--config", str(missing)))
    assert error == f"error: no Delta table at {tmp_path / 'nowhere'} (no _delta_log folder with a commit)"

    generate_sample_table(tmp_path / "lake", "delta", days=1, rows_per_day=20)
    config = _write_config(tmp_path, {"format": "delta", "uri": "lake"}, {"uri": "out"})
    error = _one_error(run_cli("score", "--config", str(config), "--as-of", "7"))
    assert error.startswith(f"error: cannot read Delta table {tmp_path / 'lake'} at version 7:")
    assert not (tmp_path / "out").exists()


def test_generate_sample_writes_a_scenario_as_an_iceberg_table(tmp_path):
    output = tmp_path / "sample"
    result = run_cli(
        "generate-sample", "--format", "iceberg", "--days", "2", "--rows-per-day", "50", "--output", str(output)
    )
    assert result.returncode == 0 and result.stdout.strip() == f"wrote 2 partition(s) under {output}", result.stderr
    catalog = {"uri": f"sqlite:///{output}/catalog.db"}
    config = _write_config(tmp_path, {"format": "iceberg", "table": ICEBERG_TABLE, "catalog": catalog}, {"uri": "out"})
    records = tables.partition_records(load_config(config).lake)
    assert [record.name for record in records] == ["day=2026-11-01", "day=2026-11-02"]
