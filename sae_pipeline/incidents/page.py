"""`anomalies.html`: the incidents of each partition and of the lake, as pages a person opens from a file or a bucket.

- `drift/<partition>/anomalies.html`, beside the partition's drift report: the incidents with flagged rows in the
  partition, each with its review status and its top rows (highest score first), every row's explaining columns
  with the row's value beside the typical value of its baseline (the scored `explanation` column), its other values
  folded away, and links to the drift report and to the incident's other partitions.
- `drift/anomalies.html`, beside the trend page: every incident of the lake, newest first, then highest peak score,
  linked to the partition pages that show its rows.

Every page names the model versions that scored the rows and the reference they were compared against (from the
partition's report.json, else the ledger). Pages are self-contained like the drift report (inline CSS, no script, no
external resource), every link is relative (it works from a file and from a static copy of the bucket), and every
value that comes from data is escaped. Per-row SAE latents are not recorded in the scored output: a partition page
recomputes them for the rows it shows with the model version that scored them (with context history, from the
recent values of their entities in the scored rows; not for versions the registry no longer keeps: the page says
so), beside the partition's latent-usage shifts from its drift report. Written with
`storage.write_text` (whole or not at all, on disk or S3) after each rebuild of the incidents table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

import numpy as np
import polars as pl

from sae_pipeline import storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.context.history import partition_tail, with_recent_means
from sae_pipeline.drift.html import nav, page
from sae_pipeline.drift.svg import format_number
from sae_pipeline.incidents.build import committed_partitions, incident_rows, read_incidents
from sae_pipeline.incidents.flagged import read_flagged
from sae_pipeline.ledger import Ledger, LedgerEntry
from sae_pipeline.registry import ModelRegistry, RegistryError
from sae_pipeline.schema import input_dtypes

#: The file name of every anomalies page: one per partition folder under `drift/`, one at the top of `drift/`.
ANOMALIES_PAGE = "anomalies.html"
#: How many of an incident's rows a partition page shows (highest score first).
TOP_ROWS = 5
#: How many incidents the lake-level page lists (the incidents table holds them all).
INDEX_LIMIT = 500
_KEY_COLUMNS = ["incident_id", "source_partition", "row_position", "anomaly_score"]
#: Beside each partition page: the latents of the rows it shows, kept for the same scoring of the partition.
LATENTS_FILE = "anomalies-latents.json"
#: Bumped whenever a partition page's content or layout changes, so that every page is written again.
PAGE_FORMAT = 1
_DIGEST = re.compile(r"<!-- sae-pipeline page digest: ([0-9a-f]+) -->")
#: How many open incidents the lake-level page lists again, most severe first.
SEVERE_LIMIT = 10
#: How many of a row's most active SAE latents a partition page shows.
TOP_LATENTS = 3

_PAGE_STYLE = """
.facts { font-size: 13px; margin: 6px 0 10px; color: #334155; }
.facts b { color: #0f172a; }
ul.why { margin: 0; padding-left: 16px; }
ul.why li { margin: 1px 0; }
details { margin-top: 4px; font-size: 12px; }
details table { width: auto; }
.badge.open { background: #fee2e2; color: #991b1b; }
.badge.closed { background: #e2e8f0; color: #334155; }
.badge.suppressed { background: #fef3c7; color: #92400e; }
section.incident { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 14px; }
section.incident h2 { font-size: 16px; }
"""


@dataclass
class AnomalyPages:
    """Where the pages are: the lake-level page, each partition's page that was (re)written, and the partitions
    whose page was already up to date (`unchanged`)."""

    index_uri: str
    partition_uris: dict[str, str]
    unchanged: list[str]


def page_uri(config: PipelineConfig, partition: str | None = None) -> str:
    """The anomalies page of `partition`, or the lake-level one."""
    folder = config.output.drift_uri if partition is None else storage.join_uri(config.output.drift_uri, partition)
    return storage.join_uri(folder, ANOMALIES_PAGE)


def _href(partition: str, file: str, up: int = 0) -> str:
    """The address of `partition`'s `file` (under `drift/`) from a page `up` folders below `drift/`."""
    return "../" * up + quote(partition, safe="/=") + "/" + file


def _depth(partition: str) -> int:
    return partition.count("/") + 1


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"  # naive UTC, as every output stores time


def _number(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format_number(value)


def _status(row: dict) -> str:
    status = row["status"]
    text = status + (f": {row['verdict']}" if row.get("verdict") else "")
    badge = f'<span class="badge {escape(status)}">{escape(text)}</span>'
    if row.get("verdict_note"):
        badge += f' <span class="muted">{escape(row["verdict_note"])}</span>'
    if row.get("suppressed_by"):
        badge += f' <span class="muted">like {escape(row["suppressed_by"])}, reviewed normal</span>'
    return badge


def _read_report(config: PipelineConfig, partition: str) -> dict | None:
    try:
        return storage.read_json(storage.join_uri(config.output.drift_uri, partition, "report.json"))
    except (storage.LakeReadError, ValueError):
        return None


def _model_line(report: dict | None, entry: LedgerEntry | None) -> str:
    """Which model scored the partition and the reference it was compared against."""
    version = (report or {}).get("model_version") or (entry.model_version if entry else None)
    reference = (report or {}).get("reference")
    text = f"Scored by model {version}" if version else "Model version not recorded"
    text += f" · compared against {reference}." if reference else " · reference not recorded in its drift report."
    return f'<p class="model" id="model">{escape(text)}</p>'


def _explanation(entries: list[dict] | None) -> str:
    """Each explaining column: the row's value (or level) beside its baseline's typical one, and its share."""
    items = []
    for entry in entries or []:
        if entry["level"] is not None or entry["typical_level"] is not None:
            value, typical = entry["level"] or "(null)", entry["typical_level"] or "n/a"
        else:
            value, typical = _number(entry["value"]), _number(entry["typical"])
        share = "" if entry["share"] is None else f" · {100 * entry['share']:.0f}% of the score"
        items.append(
            f"<li><b>{escape(entry['column'])}</b> {escape(value)} "
            f'<span class="muted">(typical {escape(typical)}{escape(share)})</span></li>'
        )
    return f'<ul class="why">{"".join(items)}</ul>' if items else '<span class="muted">n/a</span>'


def _row_values(row: dict, columns: list[str]) -> str:
    cells = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape('(null)' if row[name] is None else str(row[name]))}</td></tr>"
        for name in columns
    )
    return f"<details><summary>all values</summary><table>{cells}</table></details>"


def _latent_list(latents: list[tuple[int, float, list[str]]] | None) -> str:
    if not latents:
        return '<span class="muted">n/a</span>'
    items = "".join(
        f"<li>#{latent} <b>{_number(activation)}</b> "
        f'<span class="muted">({escape(", ".join(columns) or "n/a")})</span></li>'
        for latent, activation, columns in latents
    )
    return f'<ul class="why">{items}</ul>'


def _rows_table(rows: list[dict], config: PipelineConfig, latents: RowLatents) -> str:
    stamp = config.timestamp_column
    columns = list(input_dtypes(config))
    body = []
    for row in rows:
        body.append(
            f"<tr><td><code>{escape(row['row_key'])}</code>{_row_values(row, columns)}</td>"
            + (f"<td>{escape(_when(row[stamp]))}</td>" if stamp else "")
            + f'<td class="num">{_number(row["anomaly_score"])}</td>'
            f'<td class="num">{_number(row["anomaly_pvalue"])}</td>'
            f"<td>{escape(row['context_baseline'] or '-')}</td>"
            f"<td>{_explanation(row['explanation'])}</td>"
            f"<td>{_latent_list(latents.by_position.get(row['row_position']))}</td></tr>"
        )
    head = (
        "<tr><th>Row</th>"
        + (f"<th>{escape(stamp)} (UTC)</th>" if stamp else "")
        + "<th>Score</th><th>p-value</th><th>Baseline</th><th>Why: value (typical for its baseline)</th>"
        "<th>Most active SAE latents (columns)</th></tr>"
    )
    return f"<table>{head}{''.join(body)}</table>"


def _incident_section(
    incident: dict, rows: list[dict], rows_here: int, partition: str, config: PipelineConfig, latents: RowLatents
) -> str:
    up = _depth(partition)
    others = [
        f'<a href="{escape(_href(name, ANOMALIES_PAGE, up))}#incident-{escape(incident["incident_id"])}">'
        f"{escape(name)}</a>"
        for name in incident["partitions"] or []
        if name != partition
    ]
    facts = [
        f"<b>{incident['rows']:,}</b> flagged row(s), {rows_here:,} in this partition",
        f"from <b>{escape(_when(incident['start']))}</b> to <b>{escape(_when(incident['end']))}</b>",
        f"peak score <b>{_number(incident['peak_score'])}</b>, lowest p-value {_number(incident['min_pvalue'])}",
        f"explained by <b>{escape(', '.join(incident['top_features'] or []) or 'n/a')}</b>",
        f"model {escape(', '.join(incident['model_versions'] or []) or 'n/a')}",
        _status(incident),
    ]
    if others:
        facts.append("also in " + ", ".join(others))
    shown = f"Top {len(rows)} of its {rows_here:,} row(s) here, highest score first"
    return (
        f'<section class="incident" id="incident-{escape(incident["incident_id"])}">'
        f"<h2>Incident <code>{escape(incident['incident_id'])}</code> · {escape(incident['entity'] or '(no entity)')}"
        f'</h2><p class="facts">{" · ".join(facts)}</p><p class="muted">{shown}</p>'
        f"{_rows_table(rows, config, latents)}</section>"
    )


def _incidents_table(incidents: list[dict], link, table_id: str = "incidents") -> str:
    """One line per incident; `link(incident)` gives the address of the page that shows its rows."""
    body = "".join(
        f'<tr><td><a href="{escape(link(incident))}"><code>{escape(incident["incident_id"])}</code></a></td>'
        f"<td>{escape(incident['entity'] or '-')}</td><td>{escape(_when(incident['start']))}</td>"
        f'<td>{escape(_when(incident["end"]))}</td><td class="num">{incident["rows"]:,}</td>'
        f'<td class="num">{_number(incident["peak_score"])}</td><td class="num">{_number(incident["min_pvalue"])}</td>'
        f"<td>{escape(', '.join(incident['top_features'] or []) or '-')}</td>"
        f"<td>{_status(incident)}</td><td>{escape(incident['model_version'] or '-')}</td></tr>"
        for incident in incidents
    )
    head = (
        "<tr><th>Incident</th><th>Entity</th><th>Start (UTC)</th><th>End (UTC)</th><th>Rows</th><th>Peak score</th>"
        "<th>Min p-value</th><th>Top features</th><th>Status</th><th>Model</th></tr>"
    )
    return f'<table id="{table_id}">{head}{body}</table>'


def _latents_note(report: dict | None, latents: RowLatents) -> str:
    """How the rows' latents were found, and the partition's latent-usage shifts from its drift report."""
    text = f"Each row's most active SAE latents: {latents.note}." if latents.note else ""
    shifts = ((report or {}).get("latents") or {}).get("top_shifts") or []
    if not shifts:
        return (
            f'<section id="latents"><h2>SAE latents</h2><p class="muted">{escape(text)}</p></section>' if text else ""
        )
    rows = "".join(
        f'<tr><td>#{entry["latent"]}</td><td class="num">{100 * entry["reference_frequency"]:.2f}%</td>'
        f'<td class="num">{100 * entry["frequency"]:.2f}%</td>'
        f"<td>{escape(', '.join(c['column'] for c in entry['columns']) or 'n/a')}</td></tr>"
        for entry in shifts[:5]
    )
    return (
        f'<section id="latents"><h2>SAE latents</h2><p class="muted">{escape(text)} The latents whose use shifted '
        "most in this partition against the reference:</p><table><tr><th>Latent</th>"
        f"<th>Fires ref</th><th>Fires now</th><th>Input columns its decoder weighs most</th></tr>{rows}</table>"
        f'<p class="muted"><a href="report.html#latents">Latent usage in the drift report</a></p></section>'
    )


def render_partition_page(
    partition: str,
    incidents: pl.DataFrame,
    rows: pl.DataFrame,
    config: PipelineConfig,
    report: dict | None = None,
    entry: LedgerEntry | None = None,
    latents: RowLatents | None = None,
) -> str:
    """The anomalies page of one partition: `incidents` (incidents-table rows with flagged rows in it, in the order
    to show), `rows` (its flagged rows to show, all flagged-table columns plus `incident_id`) and their `latents`."""
    latents = latents or RowLatents({}, "")
    up = _depth(partition)
    incident_list = incidents.to_dicts()
    counts = dict(rows.group_by("incident_id").agg(pl.col("_here").first()).iter_rows()) if rows.height else {}
    open_count = sum(1 for incident in incident_list if incident["status"] == "open")
    flagged = f"{entry.rows_flagged:,} of {entry.rows_scored:,} scored rows flagged" if entry else ""
    headline = (
        f"{len(incident_list)} incident(s) with flagged rows here, {open_count} open"
        if incident_list
        else "No incidents in this partition"
    )
    tone = "drift" if open_count else "ok"
    header = (
        f'<header class="verdict {tone}" id="verdict"><h1>Anomalies · {escape(partition)}</h1>'
        f'<p>{escape(headline)}.</p><p class="sub">{escape(flagged)}</p></header>'
    )
    links = {
        "Drift report": "report.html",
        "All incidents": "../" * up + ANOMALIES_PAGE,
        "Drift over the lake": "../" * up + "index.html",
    }
    by_incident = (
        {key[0]: group.to_dicts() for key, group in rows.group_by("incident_id", maintain_order=True)}
        if rows.height
        else {}
    )
    sections = "".join(
        _incident_section(
            incident,
            by_incident.get(incident["incident_id"], []),
            counts.get(incident["incident_id"], 0),
            partition,
            config,
            latents,
        )
        for incident in incident_list
    )
    summary = ""
    if incident_list:
        table = _incidents_table(incident_list, lambda incident: "#incident-" + incident["incident_id"])
        summary = f"<section><h2>Incidents</h2>{table}</section>"
    body = (
        header
        + nav(links)
        + "<main>"
        + _model_line(report, entry)
        + summary
        + sections
        + _latents_note(report, latents)
        + "<footer>written by sae-pipeline from the incidents and flagged tables</footer></main>"
    )
    return page(f"Anomalies: {partition}", body, _PAGE_STYLE)


def render_index(
    incidents: pl.DataFrame,
    entries: dict[str, LedgerEntry],
    reports: dict[str, dict | None],
    limit: int = INDEX_LIMIT,
) -> str:
    """The lake-level anomalies page: every incident (newest first, then highest peak score), the partitions, and
    the model versions with their references."""
    ordered = incidents.sort(["end", "peak_score"], descending=True, nulls_last=True)
    shown = ordered.head(limit).to_dicts()
    open_count = int((incidents.get_column("status") == "open").sum()) if incidents.height else 0
    headline = (
        f"{open_count} open incident(s) of {incidents.height} in {len(entries)} scored partition(s)"
        if incidents.height
        else f"No incidents in {len(entries)} scored partition(s)"
    )
    tone = "drift" if open_count else "ok"
    header = (
        f'<header class="verdict {tone}" id="verdict"><h1>Anomalies over the lake</h1><p>{escape(headline)}.</p>'
        "</header>"
    )

    def link(incident: dict) -> str:
        names = incident["partitions"] or []
        return _href(names[-1], ANOMALIES_PAGE) + f"#incident-{incident['incident_id']}" if names else "#"

    more = (
        f'<p class="muted">{incidents.height - len(shown):,} older incident(s) not listed: see the incidents table.</p>'
        if incidents.height > len(shown)
        else ""
    )
    table = f"<section><h2>Incidents, newest first</h2>{_incidents_table(shown, link)}{more}</section>"
    severe = (
        incidents.filter(pl.col("status") == "open")
        .sort(["min_pvalue", "peak_score"], descending=[False, True], nulls_last=True)
        .head(SEVERE_LIMIT)
        .to_dicts()
    )
    if severe:
        table = (
            "<section><h2>Open incidents, most severe first</h2>"
            '<p class="muted">Lowest p-value first, then highest peak score.</p>'
            f"{_incidents_table(severe, link, 'severe')}</section>{table}"
        )
    per_partition: dict[str, int] = {}
    for names in incidents.get_column("partitions").to_list() if incidents.height else []:
        for name in names or []:
            per_partition[name] = per_partition.get(name, 0) + 1
    partition_rows = "".join(
        f'<tr><td><a href="{escape(_href(name, ANOMALIES_PAGE))}">{escape(name)}</a></td>'
        f'<td class="num">{entry.rows_flagged:,}</td><td class="num">{entry.rows_scored:,}</td>'
        f'<td class="num">{per_partition.get(name, 0):,}</td><td>{escape(entry.model_version)}</td>'
        f'<td><a href="{escape(_href(name, "report.html"))}">drift report</a></td></tr>'
        for name, entry in entries.items()
    )
    partitions = (
        "<section><h2>Partitions</h2><table><tr><th>Partition</th><th>Flagged rows</th><th>Scored rows</th>"
        f"<th>Incidents</th><th>Model</th><th>Drift</th></tr>{partition_rows}</table></section>"
    )
    body = (
        header
        + nav({"Drift over the lake": "index.html"})
        + "<main>"
        + _models(entries, reports)
        + table
        + partitions
        + "<footer>written by sae-pipeline from the incidents table</footer></main>"
    )
    return page("Anomalies over the lake", body, _PAGE_STYLE)


def _models(entries: dict[str, LedgerEntry], reports: dict[str, dict | None]) -> str:
    """The model versions that scored the committed partitions, with the reference each compared against."""
    versions: dict[str, dict] = {}
    for name, entry in entries.items():
        seen = versions.setdefault(entry.model_version, {"count": 0, "reference": None})
        seen["count"] += 1
        seen["reference"] = (reports.get(name) or {}).get("reference") or seen["reference"]
    lines = []
    for version, seen in sorted(versions.items(), reverse=True):
        reference = seen["reference"] or "a reference not recorded in its drift reports"
        count = seen["count"]
        lines.append(f"<li>{escape(f'Model {version}: {count} partition(s), compared against {reference}')}.</li>")
    return f'<section id="models"><h2>Models and references</h2><ul class="muted">{"".join(lines)}</ul></section>'


def _top_rows(config: PipelineConfig, partition: str, keys: pl.DataFrame, top_rows: int) -> pl.DataFrame:
    """`partition`'s flagged rows to show: each incident's `top_rows` highest scores, with `incident_id` and the
    incident's row count in the partition (`_here`)."""
    here = keys.filter(pl.col("source_partition") == partition)
    if not here.height:
        return pl.DataFrame()
    here = here.with_columns(pl.len().over("incident_id").alias("_here"))
    picked = (
        here.sort("anomaly_score", descending=True)
        .group_by("incident_id", maintain_order=True)
        .head(top_rows)
        .select("incident_id", "row_position", "_here")
    )
    flagged = read_flagged(config, [partition])
    return picked.join(flagged, on="row_position", how="left").sort(
        ["incident_id", "anomaly_score"], descending=[False, True]
    )


#: The incidents-table columns a page shows that a review can change.
_REVIEWED_COLUMNS = ["status", "verdict", "verdict_note", "suppressed_by"]


def changed_partitions(before: pl.DataFrame, after: pl.DataFrame) -> list[str]:
    """The partitions of the incidents that appeared, disappeared or whose review columns changed between two
    versions of the incidents table: the partition pages to rewrite after a review."""
    columns = ["incident_id", "partitions", *_REVIEWED_COLUMNS]
    old, new = before.select(columns), after.select(columns)
    differ = pl.concat(
        [
            old.join(new, on=columns, how="anti", nulls_equal=True),
            new.join(old, on=columns, how="anti", nulls_equal=True),
        ]
    )
    return sorted(set(differ.get_column("partitions").explode().drop_nulls().to_list()))


@dataclass
class RowLatents:
    """The most active SAE latents of the rows a partition page shows, recomputed from the model version that scored
    each row (per row position: (latent, activation, the input columns its decoder weighs most)), and a note on how
    they were found and for which rows they could not be."""

    by_position: dict[int, list[tuple[int, float, list[str]]]]
    note: str
    computed: int = 0  # rows whose latents were computed now (not taken from the cache)


def model_inputs(config: PipelineConfig, partition: str, rows: pl.DataFrame, order: list[str]) -> pl.DataFrame:
    """`rows` (flagged rows of `partition`) as the model saw them: their input columns and, with context history,
    each numeric column's recent median, recomputed from the scored rows of their entities in this partition and
    the end of the previous committed partition (`order`), as scoring computed it from the lake."""
    from sae_pipeline.pipeline import read_output_partition  # the pipeline writes these pages: imported late

    columns = list(input_dtypes(config))
    history, stamp = config.context.history, config.timestamp_column
    if history is None or stamp is None:
        return rows.select("row_position", *columns)
    entity = config.context.entity
    numeric = [column.name for column in config.columns_with_role("numeric")]
    mine = pl.col(entity).is_in(rows.get_column(entity).unique().to_list()) if entity else pl.lit(True)
    scored = read_output_partition(config, config.output.scored_uri, partition, columns)
    scored = scored.with_row_index("row_position").with_columns(pl.col("row_position").cast(pl.Int64)).filter(mine)
    tail = None
    place = order.index(partition) if partition in order else 0
    if place > 0:
        wanted = list(dict.fromkeys([*([entity] if entity else []), stamp, *numeric]))
        previous = read_output_partition(config, config.output.scored_uri, order[place - 1], wanted).filter(mine)
        tail = partition_tail(previous, entity, stamp, history.window)
    recent = with_recent_means(scored, tail, numeric, entity, stamp, history.window)
    return rows.select("row_position").join(recent, on="row_position", how="left")


def row_latents(
    config: PipelineConfig,
    partition: str,
    rows: pl.DataFrame,
    registry: ModelRegistry,
    order: list[str],
    top: int = TOP_LATENTS,
    cached: dict[int, list[tuple[int, float, list[str]]]] | None = None,
) -> RowLatents:
    """Encode the shown rows of `partition` again (`model_inputs`) with the version that scored them and keep each
    row's `top` largest codes; rows in `cached` (by position, for the same scoring of the partition) are taken from
    there, so a page rewritten after a review loads no model. Rows of versions no longer in the registry, or whose
    inputs cannot be rebuilt, get none; the note says so."""
    if not rows.height:
        return RowLatents({}, "")
    cached = cached or {}
    found = {position: cached[position] for position in rows.get_column("row_position") if position in cached}
    missing = []
    computed = 0
    todo = rows.filter(~pl.col("row_position").is_in(list(found)))
    for (version,), group in todo.group_by("model_version", maintain_order=True):
        try:
            artifact = registry.load(version)
            encoded = artifact.encoder.encode(model_inputs(config, partition, group, order))
            _, codes = artifact.detector.terms_and_codes(encoded.matrix, encoded.missing)
        except (RegistryError, storage.LakeReadError, pl.exceptions.PolarsError, KeyError) as error:
            missing.append(f"model {version}: {' '.join(str(error).split())[:200]}")
            continue
        described = (artifact.metadata.drift_reference.get("latents") or {}).get("columns") or []
        ranked = np.argsort(-codes, axis=1, kind="stable")[:, :top]
        activations = np.take_along_axis(codes, ranked, axis=1)
        computed += group.height
        for position, latents, values in zip(group.get_column("row_position").to_list(), ranked, activations):
            found[position] = [
                (
                    int(latent),
                    float(value),
                    [entry["column"] for entry in described[latent]] if latent < len(described) else [],
                )
                for latent, value in zip(latents, values)
                if value > 0
            ]
    note = (
        "recomputed for the rows shown with the model version that scored them (the scored output does not store them)"
    )
    if missing:
        note += "; not available for " + "; ".join(missing)
    return RowLatents(found, note, computed)


def _latents_key(entry: LedgerEntry, top: int = TOP_LATENTS) -> str:
    """What a partition's cached latents depend on: its scoring (model, data, when) and how many are kept."""
    payload = [entry.model_version, entry.fingerprint, entry.committed_at.isoformat(), top, PAGE_FORMAT]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]


def _read_latents(uri: str, key: str) -> dict[int, list[tuple[int, float, list[str]]]]:
    """The cached latents at `uri` if they were computed for the same scoring (`key`), else none."""
    try:
        payload = storage.read_json(uri)
    except (storage.LakeReadError, ValueError):
        return {}
    if payload.get("key") != key:
        return {}
    return {int(position): [tuple(item) for item in items] for position, items in payload["rows"].items()}


def write_anomaly_pages(
    config: PipelineConfig, partitions: list[str] | None = None, top_rows: int = TOP_ROWS
) -> AnomalyPages:
    """Rewrite the lake-level anomalies page and those of `partitions` (default: every committed partition) from
    the incidents table as last written and the flagged rows; return where they are. A partition page whose
    incidents, ledger entry and format are those it was written from (a digest at its end) is left as it is, so a
    run reads flagged rows, scored rows and models only for the pages that changed."""
    order = committed_partitions(config)
    unchanged = []
    entries_by_name = Ledger(config.output.ledger_uri).entries()
    entries = {name: entries_by_name[name] for name in order}
    incidents = read_incidents(config).sort(["end", "peak_score"], descending=True, nulls_last=True)
    keys: list[pl.DataFrame] = []  # every flagged row's incident, read once and only if a partition page changed
    reports = {name: _read_report(config, name) for name in order}
    registry = ModelRegistry(config.output.models_uri)
    written = {}
    for name in order if partitions is None else [name for name in partitions if name in entries]:
        shown = incidents.filter(pl.col("partitions").list.contains(name))
        uri = page_uri(config, name)
        digest = _digest(shown, entries[name], top_rows)
        if _written_digest(uri) == digest:
            unchanged.append(name)
            continue
        if shown.height and not keys:
            keys.append(incident_rows(config, order).select(*_KEY_COLUMNS))
        rows = _top_rows(config, name, keys[0], top_rows) if shown.height else pl.DataFrame()
        cache, key = storage.join_uri(config.output.drift_uri, name, LATENTS_FILE), _latents_key(entries[name])
        latents = row_latents(config, name, rows, registry, order, cached=_read_latents(cache, key))
        if latents.computed:
            rows_json = {str(position): items for position, items in latents.by_position.items()}
            storage.write_json(cache, {"key": key, "rows": rows_json})
        html = render_partition_page(name, shown, rows, config, reports[name], entries[name], latents)
        storage.write_text(uri, f"{html}<!-- sae-pipeline page digest: {digest} -->\n")
        written[name] = uri
    index = page_uri(config)
    storage.write_text(index, render_index(incidents, entries, reports))
    return AnomalyPages(index_uri=index, partition_uris=written, unchanged=unchanged)


def _digest(incidents: pl.DataFrame, entry: LedgerEntry, top_rows: int) -> str:
    """What a partition page shows depends on: its incidents (not when they were last rebuilt), the partition's
    ledger entry (a rescore changes its rows, scores, report and model) and the page format."""
    payload = {
        "incidents": incidents.drop("updated_at", strict=False).to_dicts(),
        "entry": entry.model_dump(mode="json"),
        "top_rows": top_rows,
        "format": PAGE_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, default=str, sort_keys=True).encode()).hexdigest()[:20]


def _written_digest(uri: str) -> str | None:
    """The digest recorded in the page at `uri`, or None when there is no page (or one without a digest)."""
    try:
        found = _DIGEST.search(storage.read_bytes(uri)[-200:].decode(errors="replace"))
    except storage.LakeReadError:
        return None
    return found.group(1) if found else None
