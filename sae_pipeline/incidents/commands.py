"""`sae-pipeline review list|mark|import`: look at incidents and record verdicts on them.

No Prefect and no model: these commands read the incidents and flagged tables and append to the review table, so
they answer in about a second. After recording verdicts they rebuild the incidents table (statuses, suppression),
the lake's anomalies page and those of the partitions whose incidents changed, under the output folder's lease;
when a run holds it, that run's rebuild picks the verdicts up instead.
"""

from __future__ import annotations

import argparse

import polars as pl

from sae_pipeline.config import PipelineConfig, load_config
from sae_pipeline.incidents.build import incident_rows, read_incidents, write_incidents
from sae_pipeline.incidents.contract import VERDICTS
from sae_pipeline.incidents.page import changed_partitions, write_anomaly_pages
from sae_pipeline.incidents.reviews import ReviewError, import_verdicts, mark
from sae_pipeline.lease import LeaseHeldError, RunLease


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def _when(value) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


def _command_list(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    incidents = read_incidents(config)
    shown = incidents if args.all else incidents.filter(pl.col("status") == "open")
    shown = shown.sort(["end", "peak_score"], descending=True, nulls_last=True).head(args.limit)
    if not incidents.height:
        print(f"no incidents under {config.output.incidents_uri} (they appear once scored rows are flagged)")
        return
    what = "incident(s)" if args.all else "open incident(s)"
    print(f"{shown.height} of {incidents.height} {what}, newest first, then highest peak score")
    if not shown.height:
        return
    header = ["id", "entity", "start", "end", "rows", "peak", "min p", "top features", "model", "status"]
    rows = [
        [
            row["incident_id"],
            row["entity"] or "-",
            _when(row["start"]),
            _when(row["end"]),
            str(row["rows"]),
            f"{row['peak_score']:.3g}",
            f"{row['min_pvalue']:.2g}",
            ", ".join(row["top_features"] or []) or "-",
            row["model_version"] or "-",
            row["status"] + (f" ({row['verdict']})" if row["verdict"] else ""),
        ]
        for row in shown.iter_rows(named=True)
    ]
    print(_format_table(header, rows))
    print(f"mark one: sae-pipeline review mark --config {args.config} ID normal|anomaly [--note TEXT]")


def _refresh(config: PipelineConfig) -> str:
    """Rebuild the incidents table under the run lease; say what happened."""
    try:
        with RunLease(config.output.lease_uri, "review", config.run.lease_ttl_seconds):
            before = read_incidents(config)
            counts = write_incidents(config, previous=before)
            pages = write_anomaly_pages(config, changed_partitions(before, read_incidents(config)))
    except LeaseHeldError:
        return "a run holds the output folder: the incidents table shows the verdict after that run"
    return (
        f"incidents: {counts.open} open, {counts.closed} reviewed, {counts.suppressed} suppressed "
        f"(page: {pages.index_uri})"
    )


def _command_mark(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    *targets, verdict = args.targets
    if verdict not in VERDICTS:
        raise ReviewError(
            f"review mark: the last argument must be the verdict ({', '.join(VERDICTS)}), not {verdict!r}"
        )
    if not targets:
        raise ReviewError("review mark: name an incident id, or row keys with --rows, before the verdict")
    if not args.rows and len(targets) != 1:
        raise ReviewError("review mark: one incident id at a time (for rows, use --rows KEY ...)")
    incidents = read_incidents(config)
    rows = incident_rows(config)
    record = mark(
        config,
        incidents,
        rows,
        verdict,
        incident=None if args.rows else targets[0],
        row_keys=targets if args.rows else None,
        note=args.note,
    )
    what = f"incident {record['incident_id']}" if record["incident_id"] else "row(s)"
    print(f"{what}: {verdict} ({len(record['row_keys'])} row(s)); {_refresh(config)}")


def _command_import(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    on_incidents, on_rows = import_verdicts(config, args.file, read_incidents(config), incident_rows(config))
    print(f"{args.file}: {on_incidents} incident verdict(s), {on_rows} row verdict(s) recorded; {_refresh(config)}")


def add_review_command(subparsers) -> None:
    """Add `review` and its subcommands to the `sae-pipeline` parser's subcommands."""
    review = subparsers.add_parser("review", help="list incidents and record verdicts on incidents or rows")
    commands = review.add_subparsers(dest="review_command", required=True)

    def command(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--config", required=True, help="YAML config (its output folder holds the incidents)")
        parser.set_defaults(handler=handler)
        return parser

    listing = command("list", "open incidents, newest first, then highest peak score", _command_list)
    listing.add_argument("--all", action="store_true", help="also reviewed and suppressed incidents")
    listing.add_argument("--limit", type=int, default=50, help="show at most this many (default 50)")
    marking = command("mark", "record a verdict: ID normal|anomaly, or --rows KEY... normal|anomaly", _command_mark)
    marking.add_argument("targets", nargs="+", metavar="ID|KEY... VERDICT", help="incident id (or row keys), verdict")
    marking.add_argument("--rows", action="store_true", help="the targets are row keys, not an incident id")
    marking.add_argument("--note", help="why (kept with the verdict)")
    importing = command("import", "record verdicts from a CSV or Parquet file", _command_import)
    importing.add_argument(
        "file", help="columns incident_id or row_key, verdict (normal|anomaly), optional note; a path or s3:// URI"
    )
