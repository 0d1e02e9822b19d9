"""A short Markdown drift report (verdict first, then the column table) for a Prefect artifact."""

from __future__ import annotations

from sae_pipeline.drift.report import describe_volume, verdict, volume_unusual

#: Columns listed in the Markdown table (most drifted first).
MARKDOWN_COLUMNS = 15


def render_markdown(report: dict, html_uri: str | None = None) -> str:
    """Verdict, score / anomaly-rate / latent lines, and a table of the most drifted columns."""
    title = report["partition"] or "(unnamed partition)"
    lines = [f"# Drift report: {title}", "", f"**{verdict(report)}** Status: **{report['overall_status']}**.", ""]
    lines += [f"- {line}" for line in _secondary_lines(report)]
    if html_uri:
        lines += [f"- Full report with plots: `{html_uri}`"]
    lines += [
        "",
        "| Column | Kind | Test | Score | Threshold | Null % now / ref | Drifted |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for name, column in list(report["columns"].items())[:MARKDOWN_COLUMNS]:
        drifted = "**yes**" if column["drifted"] else "no"
        if column["null_drifted"]:
            drifted += " (nulls)"
        lines.append(
            f"| {_cell(name)} | {column['kind']} | {column['method']} | {_number(column['score'])} | "
            f"{_number(column['threshold'])} | {_percent(column['null_share'])} / "
            f"{_percent(column['reference_null_share'])} | {drifted} |"
        )
    hidden = len(report["columns"]) - MARKDOWN_COLUMNS
    if hidden > 0:
        lines.append(f"\n{hidden} more column(s) in report.json.")
    return "\n".join(lines) + "\n"


def _secondary_lines(report: dict) -> list[str]:
    lines = [f"{report['n_rows']:,} rows (reference: {report['reference_n_rows']:,} rows)."]
    if report.get("model_version"):
        lines.append(f"Model {report['model_version']}, compared against {report.get('reference') or 'its reference'}.")
    scores = report.get("scores")
    if scores and scores["method"]:
        state = "drifted" if scores["drifted"] else "no drift"
        lines.append(
            f"Anomaly scores: {state} ({scores['method']} {_number(scores['score'])}, threshold "
            f"{_number(scores['threshold'])}); above the detector threshold: "
            f"{_percent(scores['above_threshold_share'])} (reference "
            f"{_percent(scores['reference_above_threshold_share'])})."
        )
    anomalies = report.get("anomalies")
    if anomalies:
        sentence = f"Anomaly rate {_percent(anomalies['observed_rate'])}"
        if anomalies["expected_rate"] is not None:
            judged = "above" if anomalies["anomaly_rate_exceeds_expected"] else "consistent with"
            sentence += (
                f", {judged} the target {_percent(anomalies['expected_rate'])} (p = {_number(anomalies['p_value'])})"
            )
        lines.append(sentence + ".")
    latents = report.get("latents")
    if latents:
        state = "drifted" if latents["drifted"] else "no drift"
        lines.append(
            f"Latent usage: {state} (JS distance {_number(latents['score'])}); "
            f"{len(latents['silent'])} latent(s) went silent, {len(latents['new'])} newly fire."
        )
    quarantine = report.get("quarantine")
    if quarantine:
        lines.append(f"Quarantined rows: {quarantine['rows']:,} ({_percent(quarantine['rate'])}).")
    volume = report.get("volume")
    if volume:
        head = "**Unusual volume**" if volume_unusual(volume) else "Volume"
        lines.append(f"{head}: {describe_volume(volume)}.")
    return lines


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.3g}%"


def _cell(text: str) -> str:
    """Escape the one character that would break a Markdown table cell."""
    return text.replace("|", "\\|")
