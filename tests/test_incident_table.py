"""The incidents table, the review table and what verdicts change: real Parquet files, real scoring and training."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.cli import main
from sae_pipeline import pipeline, tables, updating
from sae_pipeline.config import ConfigError, load_config
from sae_pipeline.incidents import build, contract, flagged, reviews
from sae_pipeline.incidents.training import reviewed_normal_rows
from sae_pipeline.ledger import Ledger, LedgerEntry
from sae_pipeline.registry import ModelRegistry
from sae_pipeline.runs import format_model_state, stale_partitions
from tests.conftest import SAMPLE_CONFIG, add_outage_rows, moto_s3, run_cli, write_lake_config

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
HOST = "web-incident"
#: An outage of one host that starts on the evening of the first day and goes on past midnight.
OUTAGE = [
    dt.datetime(2026, 11, 1, 23, 30),
    dt.datetime(2026, 11, 1, 23, 45),
    dt.datetime(2026, 11, 2, 0, 0),
    dt.datetime(2026, 11, 2, 0, 10),
]


def _score_all(config, version: str, names: list[str] | None = None) -> None:
    for record in tables.partition_records(config.lake):
        if names is None or record.name in names:
            pipeline.score_partition(config, record, version, "run", T0)


def _outage_incidents(config) -> pl.DataFrame:
    return build.read_incidents(config).filter(pl.col("entity") == HOST)


@pytest.fixture(scope="module")
def scored_lake(tmp_path_factory) -> Path:
    """Two days with the outage across midnight, trained on and scored (shared: tests copy it before changing it)."""
    root = tmp_path_factory.mktemp("incidents")
    path = write_lake_config(root, days=2, rows_per_day=400, max_steps=40)  # far outliers need no better model
    raw = yaml.safe_load(path.read_text())
    raw["training"]["replay_rows"] = 100_000  # the replay sample then holds every training row
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    # Two versions learn the days before the outage happened; the first is the champion that scores them.
    version = updating.train_or_update(config, tables.partition_records(config.lake)).model_version
    updating.train_or_update(config, tables.partition_records(config.lake), retrain=True)
    ModelRegistry(config.output.models_uri).promote(version, "the test's champion")
    add_outage_rows(root / "lake", HOST, OUTAGE)
    _score_all(config, version)
    build.write_incidents(config)
    return root


def _copy(scored_lake: Path, tmp_path: Path) -> Path:
    shutil.copytree(scored_lake, tmp_path / "lake-copy")
    raw = yaml.safe_load((tmp_path / "lake-copy" / "config.yaml").read_text())
    raw["lake"]["uri"] = str(tmp_path / "lake-copy" / "lake")
    raw["output"]["uri"] = str(tmp_path / "lake-copy" / "out")
    path = tmp_path / "lake-copy" / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_an_incident_across_a_partition_boundary_is_one_incident_with_one_id(scored_lake):
    config = load_config(scored_lake / "config.yaml")
    outage = _outage_incidents(config)

    assert outage.height == 1
    incident = outage.row(0, named=True)
    assert incident["partitions"] == ["day=2026-11-01", "day=2026-11-02"]
    assert incident["rows"] == len(OUTAGE)
    assert (incident["start"], incident["end"]) == (OUTAGE[0], OUTAGE[-1])
    assert incident["first_row"] == f"{HOST}@2026-11-01T23:30:00"
    assert incident["incident_id"] == build.incident_id(HOST, incident["first_row"])
    assert {"latency_ms", "error_rate"} <= set(incident["top_features"])
    assert incident["peak_score"] >= incident["mean_score"] > 0 and 0 < incident["min_pvalue"] < 0.01
    assert incident["status"] == "open" and incident["verdict"] is None
    # The table is one Parquet file with the declared columns, readable by polars directly.
    table = pl.read_parquet(str(Path(config.output.incidents_uri) / "*.parquet"))
    assert dict(table.schema) == contract.INCIDENT_COLUMNS
    assert table.get_column("incident_id").is_unique().all()


def test_rerun_and_rescore_replace_a_partitions_contribution(scored_lake, tmp_path):
    config = load_config(_copy(scored_lake, tmp_path))
    before = build.read_incidents(config)
    first_version = ModelRegistry(config.output.models_uri).champion()

    _score_all(config, first_version, ["day=2026-11-02"])  # a rerun of the second day
    counts = build.write_incidents(config)
    after_rerun = build.read_incidents(config)
    assert counts.new == 0 and after_rerun.height == before.height
    assert after_rerun.get_column("incident_id").sort().to_list() == before.get_column("incident_id").sort().to_list()
    assert _outage_incidents(config).get_column("rows").to_list() == [len(OUTAGE)]

    registry = ModelRegistry(config.output.models_uri)
    other = next(info.version for info in registry.versions() if info.version != first_version)
    registry.promote(other, "test")
    _score_all(config, other, ["day=2026-11-02"])  # rescored by another version
    build.write_incidents(config)
    outage = _outage_incidents(config).row(0, named=True)
    assert outage["incident_id"] == before.filter(pl.col("entity") == HOST).item(0, "incident_id")
    assert outage["model_versions"] == sorted([first_version, other])

    # The run summary's model lines: the first day keeps the old version's scores, and the command rescores it.
    stale = stale_partitions(config, "pipeline.yaml")
    assert stale is not None and stale.champion == other
    assert stale.partitions == {"day=2026-11-01": first_version}
    lines = format_model_state(stale.champion, stale)
    assert lines[0] == f"champion at the end of the run: {other}"
    assert "sae-pipeline score --config pipeline.yaml --rescore-with champion" in lines[-1]


def test_flagged_rows_beyond_the_memory_budget_pass_through_a_local_file_unchanged(scored_lake, tmp_path, monkeypatch):
    config = load_config(_copy(scored_lake, tmp_path))
    version = ModelRegistry(config.output.models_uri).champion()
    name = "day=2026-11-01"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    _score_all(config, version, [name])
    in_memory = flagged.read_flagged(config, [name])
    monkeypatch.setattr(flagged, "FLAGGED_MEMORY_BUDGET", 0)
    _score_all(config, version, [name])
    spilled = flagged.read_flagged(config, [name])

    assert in_memory.height and spilled.equals(in_memory)
    assert not list(scratch.iterdir())  # the local file is gone once the partition is written


def test_flagged_rows_keep_their_order_across_memory_and_the_local_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pieces = [pl.DataFrame({"row_position": [n, n + 1], "row_key": [f"k{n}", None]}) for n in range(0, 40, 2)]
    rows = flagged.FlaggedRows(memory_budget=pieces[0].estimated_size() * 3)
    for piece in pieces:
        rows.add(piece)
        rows.add(piece.clear())
    out = list(rows.pieces())
    rows.close()

    assert len(out) == len(pieces)  # the first three were held in memory, then all went to the file in order
    assert pl.concat(out).equals(pl.concat(pieces))
    assert not list(tmp_path.iterdir())
    kept = flagged.FlaggedRows()
    kept.add(pieces[0])
    kept.add(pieces[1])
    assert [piece.height for piece in kept.pieces()] == [4]  # within the budget: one frame, one row group


def test_rows_marked_anomalous_never_reach_the_next_training(scored_lake, tmp_path, capsys):
    path = _copy(scored_lake, tmp_path)
    config = load_config(path)
    incident_id = _outage_incidents(config).item(0, "incident_id")
    registry = ModelRegistry(config.output.models_uri)
    keys = [f"{HOST}@{time:%Y-%m-%dT%H:%M:%S}" for time in OUTAGE]
    outage_rows = pl.col("latency_ms") == 60_000.0

    marked = run_cli("review", "mark", "--config", str(path), incident_id[:8], "anomaly", "--note", "outage")
    assert marked.returncode == 0, marked.stderr
    assert f"incident {incident_id}: anomaly ({len(OUTAGE)} row(s))" in marked.stdout
    assert reviews.confirmed_anomaly_keys(config) == set(keys)
    assert build.read_incidents(config).filter(pl.col("incident_id") == incident_id).item(0, "status") == "closed"

    retrained = updating.train_or_update(config, tables.partition_records(config.lake), retrain=True)
    assert retrained.rows_excluded_by_review == len(OUTAGE)
    seen = registry.load(retrained.model_version).replay  # every row it trained on (replay_rows is large)
    assert seen.height == retrained.training_rows and seen.filter(outage_rows).height == 0

    # An update replays a champion's sample drawn before the review without them, and `models list` counts it.
    from sae_pipeline.incidents.training import without_confirmed_anomalies
    from sae_pipeline.sampling import model_input_columns

    lake_rows = pl.read_parquet(f"{config.lake.uri}/*/*.parquet").select(model_input_columns(config))
    replayed = without_confirmed_anomalies(config, lake_rows, set(keys))
    assert lake_rows.filter(outage_rows).height == len(OUTAGE)
    assert replayed.height == lake_rows.height - len(OUTAGE) and replayed.filter(outage_rows).height == 0
    assert main(["models", "list", "--config", str(path)]) == 0
    assert "100% of 1" in capsys.readouterr().out


def test_an_incident_reviewed_normal_suppresses_the_same_pattern_of_the_same_entity(scored_lake, tmp_path, capsys):
    path = _copy(scored_lake, tmp_path)
    config = load_config(path)
    incidents = build.read_incidents(config)
    reviews.mark(
        config,
        incidents,
        build.incident_rows(config),
        "normal",
        incident=_outage_incidents(config).item(0, "incident_id"),
    )
    # The same host shows the same outage again on a third day.
    lake = Path(config.lake.uri)
    shutil.copytree(lake / "day=2026-11-02", lake / "day=2026-11-03")
    again = [dt.datetime(2026, 11, 3, 9, 0), dt.datetime(2026, 11, 3, 9, 10)]
    frame = pl.read_parquet(lake / "day=2026-11-03" / "part-0.parquet").filter(pl.col("host_id") != HOST)
    frame.with_columns(pl.col("event_time") + dt.timedelta(days=1)).write_parquet(
        lake / "day=2026-11-03" / "part-0.parquet"
    )
    add_outage_rows(lake, HOST, again)
    _score_all(config, ModelRegistry(config.output.models_uri).champion(), ["day=2026-11-03"])

    counts = build.write_incidents(config)

    outage = _outage_incidents(config).sort("start")
    assert outage.get_column("status").to_list() == ["closed", "suppressed"]
    assert outage.item(1, "suppressed_by") == outage.item(0, "incident_id")
    assert counts.suppressed == 1 and counts.new_suppressed == 1
    assert main(["review", "list", "--config", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "open incident(s)" in listing and outage.item(1, "incident_id") not in listing  # not raised again

    # Outside the window it is raised again.
    raw = yaml.safe_load(path.read_text())
    raw["incidents"] = {"suppress_for": "30m"}
    path.write_text(yaml.safe_dump(raw))
    build.write_incidents(load_config(path))
    assert _outage_incidents(load_config(path)).sort("start").item(1, "status") == "open"


def test_a_bad_review_import_gives_one_line_naming_file_row_and_column(scored_lake, tmp_path, capsys):
    path = _copy(scored_lake, tmp_path)
    config = load_config(path)
    incident_id = _outage_incidents(config).item(0, "incident_id")
    bad = tmp_path / "verdicts.csv"
    bad.write_text(f"incident_id,verdict,note\n{incident_id},anomaly,ok\n{incident_id},maybe,unsure\n")

    assert main(["review", "import", "--config", str(path), str(bad)]) == 2

    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}: row 2, column verdict: 'maybe' is not a verdict; use one of: normal, anomaly"
    ]
    assert reviews.read_reviews(config).height == 0  # all or nothing
    good = tmp_path / "verdicts.parquet"
    pl.DataFrame({"row_key": [f"{HOST}@2026-11-01T23:30:00"], "verdict": ["anomaly"]}).write_parquet(good)
    assert main(["review", "import", "--config", str(path), str(good)]) == 0
    assert reviews.confirmed_anomaly_keys(config) == {f"{HOST}@2026-11-01T23:30:00"}


def _flagged(partition: str, rows: list[tuple], partition_rows: int = 10) -> pl.DataFrame:
    """Flagged rows (entity, time, position) as the incidents are built from."""
    return pl.DataFrame(
        {
            "row_key": [f"{partition}#{position}" for _, _, position in rows],
            "incident_entity": [entity for entity, _, _ in rows],
            "source_partition": [partition] * len(rows),
            "row_position": [position for _, _, position in rows],
            "partition_rows": [partition_rows] * len(rows),
            "anomaly_score": [1.0] * len(rows),
            "anomaly_pvalue": [0.01] * len(rows),
            "top_features": [["a"]] * len(rows),
            "model_version": ["v1"] * len(rows),
            "t": [time for _, time, _ in rows],
        },
        schema_overrides={"t": pl.Datetime("us"), "row_position": pl.Int64, "partition_rows": pl.Int64},
    )


def test_grouping_by_gap_in_time_or_in_rows(tmp_path):
    raw = _timed_config(str(tmp_path / "lake"), str(tmp_path / "out"))
    raw["incidents"] = {"gap": "30m", "gap_rows": 2}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "c.yaml")
    at = dt.datetime(2026, 11, 1, 23, 0)
    rows = pl.concat(
        [
            _flagged(
                "day=1",
                [("a", at, 7), ("b", at + dt.timedelta(minutes=10), 8), ("a", at + dt.timedelta(minutes=50), 9)],
            ),
            _flagged("day=2", [("a", at + dt.timedelta(minutes=70), 0), ("b", at + dt.timedelta(minutes=90), 1)]),
        ]
    )
    grouped = build.assign_incidents(rows, config, ["day=1", "day=2"])
    numbers = dict(zip(grouped.get_column("row_key"), grouped.get_column("incident_id")))
    assert numbers["day=1#9"] == numbers["day=2#0"] != numbers["day=1#7"]  # 20 min apart across midnight; 50 apart
    assert numbers["day=1#8"] != numbers["day=2#1"]  # b: 80 minutes apart
    assert grouped.get_column("incident_id").n_unique() == 4

    untimed = rows.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("t"))
    grouped = build.assign_incidents(untimed, config, ["day=1", "day=2"])
    numbers = dict(zip(grouped.get_column("row_key"), grouped.get_column("incident_id")))
    assert numbers["day=1#7"] == numbers["day=1#9"] == numbers["day=2#0"]  # 2 rows apart, then 1 across the boundary
    assert numbers["day=1#8"] != numbers["day=2#1"]  # b: 3 rows apart (10 - 8 + 1)

    raw["incidents"] = {"gap": "soon"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"incidents\.gap.*expected a duration such as 30m, 1h, 2d or 1w"):
        load_config(tmp_path / "bad.yaml")


def _timed_config(lake: str, output: str) -> dict:
    """The sample config with its timestamp column named `t` (as `_flagged` rows have it)."""
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text())
    raw["columns"] = [c for c in raw["columns"] if c["role"] != "timestamp"]
    raw["columns"].append({"name": "t", "type": "datetime", "role": "timestamp"})
    raw["lake"]["uri"], raw["output"]["uri"] = lake, output
    return raw


def test_incident_and_review_tables_on_s3(tmp_path):
    with moto_s3("incidents"):
        (tmp_path / "s3.yaml").write_text(yaml.safe_dump(_timed_config("s3://incidents/raw", "s3://incidents/out")))
        config = load_config(tmp_path / "s3.yaml")
        at = dt.datetime(2026, 11, 1, 23, 50)
        columns = flagged.flagged_columns(config)
        days = {"day=2026-11-01": [("h", at, 5)], "day=2026-11-02": [("h", at + dt.timedelta(minutes=20), 0)]}
        for name, rows in days.items():
            piece = pl.concat([pl.DataFrame(schema=columns), _flagged(name, rows)], how="diagonal_relaxed")
            flagged.stage_flagged(config, name, [piece], 10).commit()
            flagged.stage_flagged(config, name, [piece], 10).commit()  # a rerun replaces the partition's rows
            entry = dict(fingerprint="f", model_version="v1", rows_in=10, rows_quarantined=0, rows_scored=10)
            Ledger(config.output.ledger_uri).commit(
                LedgerEntry(
                    partition=name, **entry, rows_flagged=1, outputs={}, run_id="r", reason="new", committed_at=T0
                )
            )
        counts = build.write_incidents(config)
        assert (counts.total, counts.open, counts.new) == (1, 1, 1)
        incidents = build.read_incidents(config)
        assert incidents.item(0, "partitions").to_list() == list(days)
        assert incidents.item(0, "rows") == 2
        rows = build.incident_rows(config)
        reviews.mark(config, incidents, rows, "normal", incident=incidents.item(0, "incident_id"))
        reviews.mark(config, incidents, rows, "anomaly", row_keys=["day=2026-11-02#0"])
        assert reviews.read_reviews(config).get_column("verdict").to_list() == ["normal", "anomaly"]
        assert build.write_incidents(config).closed == 1


def test_promotion_refuses_a_candidate_that_flags_more_rows_reviewed_normal(scored_lake, tmp_path):
    config = load_config(_copy(scored_lake, tmp_path))
    registry = ModelRegistry(config.output.models_uri)
    before = registry.load(registry.champion())  # learned before the pattern existed: flags all of it
    # A batch job that is normal for this host: the same pattern every 5 minutes for most of a day, reviewed normal.
    add_outage_rows(
        Path(config.lake.uri), HOST, [dt.datetime(2026, 11, 1, 0, 0) + dt.timedelta(minutes=5 * i) for i in range(150)]
    )
    _score_all(config, before.version, ["day=2026-11-01"])
    build.write_incidents(config)
    incidents, rows = build.read_incidents(config), build.incident_rows(config)
    for incident in _outage_incidents(config).get_column("incident_id"):
        reviews.mark(config, incidents, rows, "normal", incident=incident)
    normal = reviewed_normal_rows(config)
    assert normal.height == 150 + len(OUTAGE)

    after = registry.load(
        updating.train_or_update(config, tables.partition_records(config.lake), retrain=True).model_version
    )

    refusal = updating.reviewed_normal_refusal(before, after, normal)
    assert refusal is not None and refusal.startswith("flags more rows reviewed normal than the champion: ")
    assert updating.reviewed_normal_refusal(after, before, normal) is None


def test_without_a_timestamp_rows_are_keyed_by_position_alike_in_scoring_and_training(scored_lake, tmp_path):
    path = _copy(scored_lake, tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["columns"] = [column for column in raw["columns"] if column["role"] != "timestamp"]
    raw["scoring"]["batch_rows"] = 97  # positions run on across batches, in scoring and in training samples alike
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    registry = ModelRegistry(config.output.models_uri)
    _score_all(config, registry.champion(), ["day=2026-11-01"])
    keys = build.incident_rows(config).filter(pl.col("source_partition") == "day=2026-11-01").get_column("row_key")
    assert keys.str.starts_with("day=2026-11-01#").all() and keys.len() >= 2

    from sae_pipeline.sampling import sample_valid_rows

    day = [record for record in tables.partition_records(config.lake) if record.name == "day=2026-11-01"]
    sample = sample_valid_rows(config, day, 100_000, seed=0, batch_rows=97, excluded=set(keys))
    assert sample.rows_excluded == keys.len()
    assert sample.frame.height == sample.rows_valid - keys.len()
    assert sample.frame.filter(pl.col("latency_ms") == 60_000.0).height == 0  # the outage rows were flagged


def test_a_partition_that_left_the_lake_leaves_the_incidents(scored_lake, tmp_path):
    config = load_config(_copy(scored_lake, tmp_path))

    pipeline.remove_partition_outputs(config, "day=2026-11-02")
    build.write_incidents(config)

    assert not (Path(config.output.flagged_uri) / "day=2026-11-02").exists()
    outage = _outage_incidents(config).row(0, named=True)
    assert outage["partitions"] == ["day=2026-11-01"] and outage["rows"] == 2


def test_a_verdict_given_while_a_run_holds_the_output_is_kept_for_that_runs_rebuild(scored_lake, tmp_path, capsys):
    import json
    import socket

    path = _copy(scored_lake, tmp_path)
    config = load_config(path)
    incident_id = _outage_incidents(config).item(0, "incident_id")
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat()
    holder = {"token": "t", "run_id": "other", "host": socket.gethostname(), "pid": 1, "expires_at": expires}
    Path(config.output.lease_uri).write_text(json.dumps(holder))  # a live process of this machine holds it

    assert main(["review", "mark", "--config", str(path), incident_id, "normal"]) == 0

    assert "a run holds the output folder" in capsys.readouterr().out
    assert reviews.read_reviews(config).get_column("incident_id").to_list() == [incident_id]
    assert _outage_incidents(config).item(0, "status") == "open"  # until that run rebuilds the table
    Path(config.output.lease_uri).unlink()
    assert build.write_incidents(config).closed == 1
