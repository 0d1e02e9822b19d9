"""The lake-level trend page: drift share, anomaly rate and score quantiles over partitions, from report.json dicts;
each partition's rows read and volume verdict (report.json's `volume`), and the lake's freshness (missing and late
partitions, a `sae_pipeline.volume.FreshnessVerdict` as JSON) when the caller has one."""

from __future__ import annotations

from html import escape

from sae_pipeline.drift import svg
from sae_pipeline.drift.html import nav, page
from sae_pipeline.drift.report import describe_volume, volume_unusual


def render_trend(
    reports: list[dict],
    link: str | None = "{partition}/report.html",
    title: str = "Drift over the lake",
    links: dict[str, str] | None = None,
    anomalies_link: str | None = None,
    freshness: dict | None = None,
) -> str:
    """One self-contained page over many reports (sorted by partition name); ``link`` formats each partition's
    report address relative to the page (None: no links); ``links`` (text -> relative address) are shown under
    the header (the lake's anomalies page); ``anomalies_link`` formats each partition's anomalies page address (None:
    no such column); ``freshness`` (a `FreshnessVerdict` dumped as JSON, None without `lake.expected_every`) adds
    the missing partitions to the table and says whether the lake is late."""
    reports = sorted(reports, key=lambda report: report["partition"])
    names = [report["partition"] or f"#{i}" for i, report in enumerate(reports)]
    lake_notes = _lake_notes(reports, freshness)
    sub = f'<p class="sub">{escape(" ".join(lake_notes))}</p>' if lake_notes else ""
    if not reports:
        tone = "warn" if lake_notes else "ok"
        return page(
            title,
            f'<header class="verdict {tone}" id="verdict"><h1>{escape(title)}</h1><p>No drift reports yet.</p>'
            f"{sub}</header>" + nav(links) + f"<main>{_freshness_section(reports, freshness)}</main>",
        )
    drifted = [report for report in reports if report["dataset_drift"]]
    tone = "drift" if drifted else "warn" if lake_notes else "ok"
    headline = (
        f"Dataset drift in {len(drifted)} of {len(reports)} partitions"
        + (f" (latest: {drifted[-1]['partition']})" if drifted else "")
        if drifted
        else f"No dataset drift in {len(reports)} partitions"
    )
    share_threshold = reports[-1]["drift_share_threshold"]
    share = svg.line_chart(
        names,
        {"drift share": [r["drift_share"] for r in reports]},
        hline=share_threshold,
        hline_label="dataset drift at",
        percent=True,
        label="share of drifted columns",
        y_max=1.0,
        alert=[r["dataset_drift"] for r in reports],
    )
    anomalies = [r.get("anomalies") or {} for r in reports]
    expected = next((a["expected_rate"] for a in reversed(anomalies) if a.get("expected_rate")), None)
    rate = svg.line_chart(
        names,
        {"anomaly rate": [a.get("observed_rate") for a in anomalies]},
        hline=expected,
        hline_label="target",
        percent=True,
        label="anomaly rate",
        alert=[bool(a.get("anomaly_rate_exceeds_expected")) for a in anomalies],
    )
    scores = [(r.get("scores") or {}) for r in reports]
    quantiles = {level: [(s.get("quantiles") or {}).get(level) for s in scores] for level in ("p50", "p90", "p99")}
    threshold = next((s["detector_threshold"] for s in reversed(scores) if s.get("detector_threshold")), None)
    score_chart = svg.line_chart(
        names, quantiles, hline=threshold, hline_label="detector threshold", label="anomaly score quantiles"
    )
    rows = {}
    for name, report, anomaly in zip(names, reports, anomalies):
        cell = escape(name)
        if link:
            cell = f'<a href="{escape(link.format(partition=report["partition"]))}">{cell}</a>'
        if anomalies_link:
            href = escape(anomalies_link.format(partition=report["partition"]))
            cell += f' · <a href="{href}">anomalies</a>'
        badge = (
            '<span class="badge yes">drift</span>' if report["dataset_drift"] else '<span class="badge no">ok</span>'
        )
        rows[name] = (
            f'<tr class="{"drifted" if report["dataset_drift"] else ""}"><td>{cell}</td><td>{badge}</td>'
            f'<td class="num">{100 * report["drift_share"]:.0f}%</td>'
            f'<td class="num">{_percent(anomaly.get("observed_rate"))}</td>'
            f'<td class="num">{_rows_read(report):,}</td><td>{_volume_cell(report.get("volume"))}</td>'
            f'<td class="num">{report["n_rows"]:,}</td>'
            f"<td>{escape(report.get('model_version') or 'not recorded')}</td>"
            f"<td>{escape(', '.join(report['drifted_columns'][:6]))}</td></tr>"
        )
    for name in (freshness or {}).get("missing", []):
        if "=" in name and name not in rows:  # named like a partition (a date-only key): shown in its place
            rows[name] = (
                f'<tr class="drifted missing"><td>{escape(name)}</td><td><span class="badge yes">missing</span></td>'
                '<td colspan="7" class="muted">no partition in the lake for this period</td></tr>'
            )
    table = (
        '<table id="partitions"><tr><th>Partition</th><th>Verdict</th><th>Drift share</th><th>Anomaly rate</th>'
        "<th>Rows read</th><th>Volume</th><th>Scored rows</th><th>Model</th><th>Drifted columns</th></tr>"
        f"{''.join(rows[name] for name in sorted(rows))}</table>"
    )
    body = (
        f'<header class="verdict {tone}" id="verdict"><h1>{escape(title)}</h1><p>{escape(headline)}.</p>{sub}'
        f"</header>{nav(links)}<main>{_models(reports)}<section><h2>Share of drifted columns</h2>{share}</section>"
        f"<section><h2>Anomaly rate</h2>{rate}</section>"
        f"<section><h2>Anomaly score quantiles</h2>{score_chart}</section>"
        f"{_freshness_section(reports, freshness)}"
        f"<section><h2>Partitions</h2>{table}</section>"
        f"{_group_trend(reports)}"
        f"<footer>{len(reports)} report(s) · written by sae-pipeline</footer></main>"
    )
    return page(title, body)


def _rows_read(report: dict) -> int:
    """Rows read: the volume verdict's count, else the scored plus the quarantined rows."""
    if report.get("volume"):
        return report["volume"]["rows_in"]
    return report["n_rows"] + (report.get("quarantine") or {}).get("rows", 0)


def _volume_cell(volume: dict | None) -> str:
    """The partition's volume verdict: what is unusual (red), `ok`, `no history`, or that it was not checked."""
    if not volume:
        return '<span class="muted">not checked</span>'
    if volume_unusual(volume):
        what = [f"rows {volume['rows_status']}"] if volume["rows_status"] in ("low", "high") else []
        what += ["quarantine high"] if volume["quarantine_status"] == "high" else []
        return f'<span class="badge yes" title="{escape(describe_volume(volume))}">{escape(", ".join(what))}</span>'
    if volume["rows_status"] == "no_history":
        return '<span class="badge none">no history</span>'
    return f'<span class="badge no" title="{escape(describe_volume(volume))}">ok</span>'


def _lake_notes(reports: list[dict], freshness: dict | None) -> list[str]:
    """What the header says besides drift: partitions with an unusual volume, missing partitions, a late lake."""
    notes = []
    unusual = [report["partition"] for report in reports if volume_unusual(report.get("volume"))]
    if unusual:
        notes.append(f"Unusual volume in {len(unusual)} partition(s) (latest: {unusual[-1]}).")
    if freshness and freshness["n_missing"]:
        notes.append(f"{freshness['n_missing']} partition(s) missing.")
    if freshness and freshness["late"]:
        notes.append(f"Late: {freshness['next_expected']} was due by {_moment(freshness['due_by'])}.")
    return notes


def _moment(value: str | None) -> str:
    """An ISO time from a verdict as `YYYY-MM-DD HH:MM UTC`."""
    return "n/a" if not value else value[:16].replace("T", " ") + " UTC"


def _freshness_section(reports: list[dict], freshness: dict | None) -> str:
    """Rows read over partitions with their usual band, and the lake against its cadence."""
    parts = []
    if freshness:
        if freshness["latest"] is None:
            state = f"No partition in the lake yet (expected one every {freshness['expected_every']})."
        else:
            state = f"Expected every {freshness['expected_every']}; latest partition {freshness['latest']}."
            if freshness["late"]:
                state += f" Late: {freshness['next_expected']} was due by {_moment(freshness['due_by'])}."
            else:
                state += f" Next expected: {freshness['next_expected']} (due by {_moment(freshness['due_by'])})."
            if freshness["n_missing"]:
                listed = len(freshness["missing"])
                more = f" ({listed} listed)" if listed < freshness["n_missing"] else ""
                state += (
                    f" {freshness['n_missing']} period(s) with no partition{more}: {', '.join(freshness['missing'])}."
                )
            else:
                state += " No period missing between the first and the latest partition."
        state += f" Checked at {_moment(freshness['checked_at'])}."
        parts.append(f'<p id="freshness">{escape(state)}</p>')
    volumes = [report.get("volume") or {} for report in reports]
    if any(volumes):
        names = [report["partition"] for report in reports]
        chart = svg.line_chart(
            names,
            {
                "rows read": [float(_rows_read(report)) for report in reports],
                "usual low": [volume.get("rows_low") for volume in volumes],
                "usual high": [volume.get("rows_high") for volume in volumes],
            },
            label="rows read per partition with the band of the partitions before it",
            alert=[volume_unusual(volume) for volume in volumes],
        )
        parts.append(chart)
    if not parts:
        return ""
    return f'<section id="volume"><h2>Volume and freshness</h2>{"".join(parts)}</section>'


def _models(reports: list[dict]) -> str:
    """Which model versions scored the partitions shown and what each compared against (latest first)."""
    seen: dict[str | None, dict] = {}
    for report in reports:
        entry = seen.setdefault(report.get("model_version"), {"count": 0, "reference": None})
        entry["count"] += 1
        entry["reference"] = report.get("reference") or entry["reference"]
    lines = []
    for version, entry in reversed(seen.items()):
        who = f"Model {version}" if version else "Model not recorded (reports written before it was)"
        line = f"{who}: {entry['count']} partition(s)"
        if entry["reference"]:
            line += f", compared against {entry['reference']}"
        lines.append(f"<li>{escape(line)}.</li>")
    return f'<section id="models"><h2>Models and references</h2><ul class="muted">{"".join(lines)}</ul></section>'


def _group_trend(reports: list[dict], limit: int = 15) -> str:
    """The context groups whose flagged rate moved most in any partition, with their peak and latest rates."""
    peaks: dict[str, dict] = {}
    for report in reports:
        for entry in (report.get("groups") or {}).get("top", []):
            seen = peaks.setdefault(entry["group"], {"z": None, "latest": None})
            seen["latest"] = (report["partition"], entry["rate"], entry["baseline"])
            if entry["z_score"] is not None and (seen["z"] is None or entry["z_score"] > seen["z"]):
                seen.update(z=entry["z_score"], peak=(report["partition"], entry["rate"]))
    if not peaks:
        return ""
    ranked = sorted(peaks.items(), key=lambda item: -(item[1]["z"] or 0.0))[:limit]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(seen['latest'][2])}</td>"
        f'<td class="num">{_percent(seen["peak"][1]) if "peak" in seen else "n/a"}</td>'
        f"<td>{escape(seen['peak'][0]) if 'peak' in seen else ''}</td>"
        f'<td class="num">{svg.format_number(seen["z"])}</td>'
        f'<td class="num">{_percent(seen["latest"][1])}</td></tr>'
        for name, seen in ranked
    )
    return (
        '<section id="groups"><h2>Groups that moved most</h2><table><tr><th>Group</th><th>Baseline</th>'
        f"<th>Peak rate</th><th>In</th><th>Peak z vs target</th><th>Latest rate</th></tr>{rows}</table></section>"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
