"""report.html: one self-contained page per partition (inline CSS and SVG, no script, no external resource).

Order follows what a reader needs first: the verdict, summary cards, the columns sorted by drift with a small
reference-vs-current picture each, larger pictures of the most drifted columns, the anomaly-score histogram
with the detector threshold, latent usage, the partition's volume (rows read and quarantined share against the
partitions before it, once the volume check has added it), and quarantine reasons. How each test's score reads
(p-value or distance) comes from the drift-test registry, so a new test is explained without touching this module.
"""

from __future__ import annotations

from html import escape

from sae_pipeline.drift import svg
from sae_pipeline.drift.report import anomaly_rate_too_high, describe_volume, verdict, volume_unusual
from sae_pipeline.drift.stattests import get_stattest, registered_stattests

#: Shared page style (also used by the trend page).
STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #0f172a;
       background: #f8fafc; }
main { max-width: 1140px; margin: 0 auto; padding: 0 20px 40px; }
header.verdict { padding: 22px 28px; color: #fff; }
header.verdict.drift { background: #b91c1c; }
header.verdict.warn { background: #b45309; }
header.verdict.ok { background: #15803d; }
header.verdict h1 { margin: 0 0 6px; font-size: 15px; font-weight: 600; opacity: .9; }
header.verdict p { margin: 0; font-size: 22px; font-weight: 650; }
header.verdict p.sub { margin-top: 6px; font-size: 14px; font-weight: 400; opacity: .95; }
section { margin-top: 26px; }
h2 { font-size: 18px; margin: 0 0 10px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 14px; }
.card .label { font-size: 12px; color: #475569; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 22px; font-weight: 650; margin-top: 4px; }
.card .note { font-size: 12px; color: #475569; margin-top: 4px; }
.card.bad { border-color: #fca5a5; background: #fef2f2; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #e2e8f0; font-size: 13px; }
th, td { padding: 6px 8px; border-bottom: 1px solid #e2e8f0; text-align: left; vertical-align: middle; }
th { background: #f1f5f9; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.drifted td:first-child { border-left: 4px solid #dc2626; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.yes { background: #fee2e2; color: #991b1b; }
.badge.no { background: #dcfce7; color: #166534; }
.badge.none { background: #e2e8f0; color: #334155; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 10px; }
figcaption { font-size: 13px; margin-bottom: 6px; }
.muted { color: #64748b; font-size: 13px; }
footer { margin-top: 30px; color: #64748b; font-size: 12px; }
a { color: #1d4ed8; }
svg { max-width: 100%; height: auto; }
nav.links { padding: 8px 28px; background: #e2e8f0; font-size: 13px; }
nav.links a { margin-right: 16px; }
p.model { margin: 14px 0 0; font-size: 13px; color: #334155; }
"""


def page(title: str, body: str, style: str = "") -> str:
    """A whole self-contained page: the shared `STYLE` plus `style`, around `body`."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{STYLE}{style}</style></head>'
        f"<body>{body}</body></html>\n"
    )


def nav(links: dict[str, str] | None) -> str:
    """A line of links (text -> address relative to the page), e.g. to the partition's anomalies page."""
    if not links:
        return ""
    items = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in links.items())
    return f'<nav class="links">{items}</nav>'


def model_line(report: dict) -> str:
    """Which model scored the partition and what it was compared against (reports written before say so)."""
    version = report.get("model_version")
    reference = report.get("reference")
    text = (f"Model {version}" if version else "Model version not recorded in this report (written before it was)") + (
        f" · compared against {reference}." if reference else "."
    )
    return f'<p class="model" id="model">{escape(text)}</p>'


def render_html(report: dict, max_plots: int = 6, links: dict[str, str] | None = None) -> str:
    """The self-contained HTML page of one report.json dict; ``max_plots`` drifted columns get a large picture;
    ``links`` (text -> relative address) are shown under the header."""
    name = report["partition"] or "(unnamed partition)"
    tone = "drift" if report["dataset_drift"] else ("warn" if report["n_drifted_columns"] else "ok")
    if tone == "ok" and (anomaly_rate_too_high(report) or volume_unusual(report.get("volume"))):
        tone = "warn"  # never a green header over a red anomaly-rate or volume card
    header = (
        f'<header class="verdict {tone}" id="verdict"><h1>Drift report · {escape(name)}</h1>'
        f'<p>{escape(verdict(report))}</p><p class="sub">{escape(_sub_verdict(report))}</p></header>'
    )
    parts = [
        model_line(report),
        _cards(report),
        _column_table(report),
        _column_figures(report, max_plots),
        _score_section(report),
        _group_section(report),
        _latent_section(report),
        _volume_section(report),
        _quarantine_section(report),
    ]
    footer = (
        f"<footer>report.json schema version {report['schema_version']} · {report['n_rows']:,} rows · "
        f"reference {report['reference_n_rows']:,} rows · written by sae-pipeline</footer>"
    )
    return page(f"Drift report: {name}", header + nav(links) + "<main>" + "".join(parts) + footer + "</main>")


def _sub_verdict(report: dict) -> str:
    """What else is unusual besides the columns (score and latent drift, else what was measured and found usual),
    and the partition's volume when it is unusual."""
    text = _drift_notes(report)
    volume = report.get("volume")
    if volume_unusual(volume):
        text = f"{text} Unusual volume: {describe_volume(volume)}.".strip()
    return text


def _drift_notes(report: dict) -> str:
    notes = []
    scores = report.get("scores")
    if scores and scores["drifted"]:
        notes.append("Anomaly scores drifted.")
    latents = report.get("latents")
    if latents and latents["drifted"]:
        notes.append("SAE latent usage drifted.")
    if notes:
        return " ".join(notes)
    too_high = anomaly_rate_too_high(report)  # the verdict line above says so
    measured = [
        label
        for key, label in (("scores", "anomaly scores"), ("anomalies", "the anomaly rate"), ("latents", "latent usage"))
        if report.get(key) and not (key == "anomalies" and too_high)
    ]
    if not measured:
        return (
            "" if too_high else "Only the input columns were compared (no scores, anomaly flags or latent codes given)."
        )
    return "Nothing unusual in " + ", ".join(measured) + "."


def _card(label: str, value: str, note: str = "", bad: bool = False) -> str:
    return (
        f'<div class="card{" bad" if bad else ""}"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div><div class="note">{escape(note)}</div></div>'
    )


def _cards(report: dict) -> str:
    cards = [
        _card(
            "Drifted columns",
            f"{report['n_drifted_columns']} / {report['n_columns']}",
            f"{100 * report['drift_share']:.0f}% (dataset drift at {100 * report['drift_share_threshold']:.0f}%)",
            report["dataset_drift"],
        )
    ]
    anomalies = report.get("anomalies")
    if anomalies:
        note = "no target given"
        if anomalies["expected_rate"] is not None:
            note = f"target {100 * anomalies['expected_rate']:.2f}%, p = {svg.format_number(anomalies['p_value'])}"
            if anomalies.get("calibration_rows"):
                note += f" (threshold set on {anomalies['calibration_rows']:,} rows)"
        cards.append(
            _card(
                "Anomaly rate",
                f"{100 * anomalies['observed_rate']:.2f}%",
                note,
                anomaly_rate_too_high(report),
            )
        )
    scores = report.get("scores")
    if scores and scores["method"]:
        cards.append(
            _card(
                "Anomaly score",
                "drifted" if scores["drifted"] else "stable",
                f"{scores['method']} {svg.format_number(scores['score'])} (threshold "
                f"{svg.format_number(scores['threshold'])})",
                scores["drifted"],
            )
        )
    latents = report.get("latents")
    if latents:
        cards.append(
            _card(
                "Latent usage",
                "drifted" if latents["drifted"] else "stable",
                f"JS {svg.format_number(latents['score'])}; {len(latents['silent'])} silent, {len(latents['new'])} new",
                latents["drifted"],
            )
        )
    quarantine = report.get("quarantine")
    if quarantine:
        cards.append(
            _card("Quarantined rows", f"{quarantine['rows']:,}", f"{100 * quarantine['rate']:.2f}% of rows read")
        )
    volume = report.get("volume")
    if volume:
        if volume["rows_status"] == "no_history":
            note = f"not judged: {volume['history']} earlier partition(s)"
        else:
            note = f"usual {_band(volume)} ({volume['history']} earlier partitions)"
        cards.append(_card("Rows read", f"{volume['rows_in']:,}", note, volume_unusual(volume)))
    return '<section class="cards">' + "".join(cards) + "</section>"


def _column_table(report: dict) -> str:
    rows = []
    for name, column in report["columns"].items():
        badge = '<span class="badge yes">drift</span>' if column["drifted"] else '<span class="badge no">ok</span>'
        why = []
        if column["test_drifted"]:
            why.append("test")
        if column["null_drifted"]:
            why.append("nulls")
        if column.get("unseen_share"):
            why.append(f"{100 * column['unseen_share']:.1f}% unseen")
        picture = svg.distribution(column["plot"], 160, 36, compact=True, label=f"{name} distribution")
        rows.append(
            f'<tr class="{"drifted" if column["drifted"] else ""}"><td><b>{escape(name)}</b></td>'
            f'<td>{column["kind"]}</td><td title="{escape(_test_label(column["method"]))}">{column["method"]}</td>'
            f'<td class="num">{svg.format_number(column["score"])}</td>'
            f'<td class="num">{svg.format_number(column["threshold"])}</td>'
            f'<td>{badge} <span class="muted">{escape(", ".join(why))}</span></td>'
            f'<td class="num">{svg.format_number(column["psi"])}</td>'
            f'<td class="num">{100 * column["null_share"]:.1f}% / {100 * column["reference_null_share"]:.1f}%</td>'
            f"<td>{picture}</td></tr>"
        )
    head = (
        "<tr><th>Column</th><th>Type</th><th>Test</th><th>Score</th><th>Threshold</th><th>Drift</th>"
        "<th>PSI</th><th>Nulls now / ref</th><th>Reference (grey) vs now (blue)</th></tr>"
    )
    note = f'<p class="muted">{escape(_tests_note())}</p>'
    table = f'<table id="columns">{head}{"".join(rows)}</table>'
    return f"<section><h2>Columns, most drifted first</h2>{table}{note}</section>"


def _test_label(method: str) -> str:
    """The test's full name and how its score reads, e.g. "Kolmogorov-Smirnov (p-value: drift when ≤ threshold)"."""
    test = get_stattest(method)
    reading = "p-value: drift when ≤ threshold" if test.direction == "pvalue" else "distance: drift when ≥ threshold"
    return f"{test.title} ({reading})"


def _tests_note() -> str:
    """How to read each registered test's score: p-values (drift when ≤ threshold), then distances (≥ threshold)."""

    def named(tests: list) -> str:
        names = [f"{test.name} ({test.note})" if test.note else test.name for test in tests]
        return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)

    pvalues = [test for test in registered_stattests() if test.direction == "pvalue"]
    distances = [test for test in registered_stattests() if test.direction == "distance"]
    return (
        f"Tests: {named(pvalues)} scores are p-values (drift when ≤ threshold); {named(distances)} are distances "
        "(drift when ≥ threshold). PSI is reported for every column."
    )


def _column_figures(report: dict, limit: int = 6) -> str:
    names = [name for name, column in report["columns"].items() if column["drifted"]][:limit]
    if not names:
        names = list(report["columns"])[: min(3, limit)]
        title = "Largest (non-significant) changes"
    else:
        title = "Most drifted columns"
    figures = []
    for name in names:
        column = report["columns"][name]
        score, threshold = svg.format_number(column["score"]), svg.format_number(column["threshold"])
        stats = f"{column['method']} {score} vs threshold {threshold}"
        if column["mean"] is not None or column["reference_mean"] is not None:
            stats += f"; mean {svg.format_number(column['reference_mean'])} → {svg.format_number(column['mean'])}"
        quantiles, reference = column.get("quantiles") or {}, column.get("reference_quantiles") or {}
        for level in ("p90", "p99"):
            if quantiles.get(level) is not None and reference.get(level) is not None:
                stats += f"; {level} {svg.format_number(reference[level])} → {svg.format_number(quantiles[level])}"
        figures.append(
            f"<figure><figcaption><b>{escape(name)}</b> · {escape(stats)}</figcaption>"
            f"{svg.distribution(column['plot'], 440, 180, label=f'{name}: reference vs current')}</figure>"
        )
    return f'<section><h2>{title}</h2><div class="figures">{"".join(figures)}</div></section>'


def _score_section(report: dict) -> str:
    scores = report.get("scores")
    if not scores:
        return ""
    if not scores["method"]:
        return (
            '<section><h2>Anomaly score</h2><p class="muted">The reference has no score summary, so '
            "anomaly-score drift is not measured.</p></section>"
        )
    quantiles, reference = scores["quantiles"] or {}, scores["reference_quantiles"] or {}
    rows = "".join(
        f'<tr><td>{level}</td><td class="num">{svg.format_number(reference.get(level))}</td>'
        f'<td class="num">{svg.format_number(quantiles.get(level))}</td></tr>'
        for level in ("p50", "p90", "p99")
    )
    above = scores["above_threshold_share"]
    text = (
        f"{scores['method']} {svg.format_number(scores['score'])} "
        f"(threshold {svg.format_number(scores['threshold'])}): "
        f"{'drifted' if scores['drifted'] else 'no drift'}."
    )
    if above is not None:
        text += (
            f" Above the detector threshold: {100 * above:.2f}% now, "
            f"{100 * (scores['reference_above_threshold_share'] or 0):.2f}% of validation rows."
        )
    chart = svg.distribution(
        scores["histogram"],
        560,
        220,
        marker=scores["detector_threshold"],
        label="anomaly score: validation vs current, with the detector threshold",
    )
    table = f"<table><tr><th>Quantile</th><th>Validation</th><th>Now</th></tr>{rows}</table>"
    return (
        f'<section><h2>Anomaly score</h2><p>{escape(text)}</p><div class="figures">'
        f"<figure><figcaption>Anomaly-score histogram, threshold dashed red</figcaption>{chart}</figure>"
        f"<figure><figcaption>Score quantiles</figcaption>{table}</figure></div></section>"
    )


def _latent_section(report: dict) -> str:
    latents = report.get("latents")
    if not latents:
        return ""
    highlight = {
        entry["latent"]: " (" + ", ".join(c["column"] for c in entry["columns"]) + ")"
        for entry in [*latents["top_shifts"][:8], *latents["silent"], *latents["new"]]
    }
    chart = svg.latent_scatter(
        latents["reference_frequency"],
        latents["frequency"],
        highlight,
        label="latent firing frequency now vs reference",
    )
    rows = []
    listed = {entry["latent"] for entry in [*latents["silent"], *latents["new"]]}
    shifts = [entry for entry in latents["top_shifts"] if entry["latent"] not in listed]
    for kind, entries in (("silent", latents["silent"]), ("new", latents["new"]), ("shift", shifts)):
        for entry in entries:
            columns = ", ".join(f"{c['column']} ({100 * c['weight']:.0f}%)" for c in entry["columns"]) or "n/a"
            rows.append(
                f"<tr><td>#{entry['latent']}</td><td>{kind}</td>"
                f'<td class="num">{100 * entry["reference_frequency"]:.2f}%</td>'
                f'<td class="num">{100 * entry["frequency"]:.2f}%</td>'
                f'<td class="num">{svg.format_number(entry["reference_mean_activation"])} → '
                f"{svg.format_number(entry['mean_activation'])}</td><td>{escape(columns)}</td></tr>"
            )
    table = (
        "<table><tr><th>Latent</th><th>Kind</th><th>Fires ref</th><th>Fires now</th><th>Mean activation</th>"
        f"<th>Input columns its decoder weighs most</th></tr>{''.join(rows)}</table>"
    )
    text = (
        f"{latents['n_latents']} latents; Jensen-Shannon distance of firing profiles "
        f"{svg.format_number(latents['score'])} (threshold {svg.format_number(latents['threshold'])}): "
        f"{'drifted' if latents['drifted'] else 'no drift'}. {len(latents['silent'])} latent(s) went silent, "
        f"{len(latents['new'])} fire that never fired in the reference."
    )
    return (
        f'<section id="latents"><h2>SAE latent usage</h2><p>{escape(text)}</p><div class="figures">'
        f"<figure><figcaption>Each dot is a latent; off the diagonal = used more or less than in the reference"
        f"</figcaption>{chart}</figure><figure><figcaption>Largest shifts</figcaption>{table}</figure></div></section>"
    )


def _group_section(report: dict) -> str:
    """Flagged rates by context group, the groups that moved most first; new and few-rows groups named."""
    groups = report.get("groups")
    if not groups:
        return ""
    counts = ", ".join(f"{count:,} {status}" for status, count in groups["baselines"].items())
    notes = [f"{groups['n_groups']:,} group(s) by baseline: {counts}."]
    for key, label in (("new_groups", "New (judged against the fleet)"), ("few_rows_groups", "Few training rows")):
        if groups[key]:
            notes.append(f"{label}: {', '.join(groups[key])}.")
    rows = []
    for entry in groups["top"]:
        unusual_nulls = [
            f"{name} {100 * share:.1f}% (usual {100 * entry['usual_null_shares'][name]:.1f}%)"
            for name, share in entry["null_shares"].items()
            if share or entry["usual_null_shares"][name]
        ]
        high = entry["z_score"] is not None and entry["z_score"] > 3
        rows.append(
            f'<tr class="{"drifted" if high else ""}"><td>{escape(entry["group"])}</td>'
            f'<td>{escape(entry["baseline"])}</td><td class="num">{entry["n_rows"]:,}</td>'
            f'<td class="num">{entry["n_flagged"]:,}</td><td class="num">{100 * entry["rate"]:.2f}%</td>'
            f'<td class="num">{svg.format_number(entry["z_score"])}</td>'
            f"<td>{escape('; '.join(unusual_nulls))}</td></tr>"
        )
    table = (
        "<table><tr><th>Group</th><th>Baseline</th><th>Rows</th><th>Flagged</th><th>Rate</th>"
        f"<th>z vs target</th><th>Null shares</th></tr>{''.join(rows)}</table>"
    )
    return f'<section id="groups"><h2>Anomaly rate by group</h2><p>{escape(" ".join(notes))}</p>{table}</section>'


def _band(volume: dict) -> str:
    return f"{volume['rows_low']:,.0f}–{volume['rows_high']:,.0f}"


def _status_badge(status: str) -> str:
    """`low`/`high` red, `ok` green, `no_history` grey."""
    kind = {"ok": "no", "no_history": "none"}.get(status, "yes")
    return f'<span class="badge {kind}">{escape(status.replace("_", " "))}</span>'


def _volume_section(report: dict) -> str:
    """Rows read against the band of the partitions before this one, and the quarantined share against its bound."""
    volume = report.get("volume")
    if not volume:
        return ""
    judged = volume["rows_status"] != "no_history"
    rows_usual = f"{_band(volume)} (median {volume['rows_median']:,.0f})" if judged else "n/a"
    share_usual = (
        f"at most {100 * volume['quarantine_high']:.2f}% (median {100 * volume['quarantine_median']:.2f}%)"
        if judged
        else "n/a"
    )
    rows = (
        f'<tr class="{"drifted" if volume["rows_status"] in ("low", "high") else ""}"><td>Rows read</td>'
        f'<td class="num">{volume["rows_in"]:,}</td><td>{escape(rows_usual)}</td>'
        f"<td>{_status_badge(volume['rows_status'])}</td></tr>"
        f'<tr class="{"drifted" if volume["quarantine_status"] == "high" else ""}"><td>Quarantined share</td>'
        f'<td class="num">{100 * volume["quarantined_share"]:.2f}%</td><td>{escape(share_usual)}</td>'
        f"<td>{_status_badge(volume['quarantine_status'])}</td></tr>"
    )
    text = (
        f"Judged against the {volume['history']} partition(s) before this one in the lake's order."
        if judged
        else f"Not judged yet: only {volume['history']} earlier partition(s) (volume.min_history)."
    )
    table = f"<table><tr><th>Measure</th><th>Now</th><th>Usual</th><th>Verdict</th></tr>{rows}</table>"
    return f'<section id="volume"><h2>Volume</h2><p class="muted">{escape(text)}</p>{table}</section>'


def _quarantine_section(report: dict) -> str:
    quarantine = report.get("quarantine")
    null_rows = [(name, c) for name, c in report["columns"].items() if c["null_share"] or c["reference_null_share"]]
    if not quarantine and not null_rows:
        return ""
    parts = ["<section><h2>Data quality</h2>"]
    if quarantine:
        rows = "".join(
            f'<tr><td>{escape(reason)}</td><td class="num">{count:,}</td></tr>'
            for reason, count in quarantine["reasons"].items()
        )
        parts.append(
            f"<p>{quarantine['rows']:,} row(s) quarantined ({100 * quarantine['rate']:.2f}% of rows read).</p>"
        )
        if rows:
            parts.append(f"<table><tr><th>Reason</th><th>Rows</th></tr>{rows}</table>")
    if null_rows:
        rows = "".join(
            f'<tr><td>{escape(name)}</td><td class="num">{100 * c["reference_null_share"]:.2f}%</td>'
            f'<td class="num">{100 * c["null_share"]:.2f}%</td></tr>'
            for name, c in null_rows
        )
        parts.append(
            f'<p class="muted">Null shares</p><table><tr><th>Column</th><th>Reference</th><th>Now</th></tr>'
            f"{rows}</table>"
        )
    return "".join(parts) + "</section>"
