"""Inline SVG charts for the drift pages: distributions, line charts, a latent-usage scatter. No scripts."""

from __future__ import annotations

import math
from html import escape

REFERENCE_COLOUR = "#94a3b8"
CURRENT_COLOUR = "#2563eb"
ALERT_COLOUR = "#dc2626"
SERIES_COLOURS = ("#2563eb", "#16a34a", "#d97706", "#7c3aed", "#db2777")


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(
    x: float, y: float, text: str, anchor: str = "start", size: int = 11, colour: str = "#334155", extra: str = ""
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}" text-anchor="{anchor}" {extra}>'
        f"{escape(text)}</text>"
    )


def format_number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def distribution(
    plot: dict | None,
    width: int = 420,
    height: int = 170,
    compact: bool = False,
    marker: float | None = None,
    marker_label: str = "threshold",
    label: str = "distribution",
) -> str:
    """Reference (grey) vs current (blue) shares: overlaid histogram or grouped bars; optional vertical marker."""
    if not plot:
        return _svg(width, height, [_text(width / 2, height / 2, "no data", "middle")], label)
    if plot["type"] == "bars":
        return _bars(plot, width, height, compact, label)
    return _histogram(plot, width, height, compact, marker, marker_label, label)


def _histogram(
    plot: dict, width: int, height: int, compact: bool, marker: float | None, marker_label: str, label: str
) -> str:
    edges = plot["edges"]
    left, right, top, bottom = (2, 2, 2, 2) if compact else (8, 8, 18, 22)
    inner_w, inner_h = width - left - right, height - top - bottom
    peak = max([*(v or 0 for v in plot["reference"]), *(v or 0 for v in plot["current"])] or [0]) or 1.0
    n = len(plot["reference"])
    bar_w = inner_w / max(n, 1)
    body = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for series, colour, opacity in (("reference", REFERENCE_COLOUR, 0.75), ("current", CURRENT_COLOUR, 0.45)):
        for i, value in enumerate(plot[series]):
            h = inner_h * (value or 0) / peak
            body.append(
                f'<rect x="{left + i * bar_w:.1f}" y="{top + inner_h - h:.1f}" width="{max(bar_w - 0.5, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{colour}" fill-opacity="{opacity}"/>'
            )
    body.append(f'<line x1="{left}" y1="{top + inner_h}" x2="{left + inner_w}" y2="{top + inner_h}" stroke="#64748b"/>')
    if marker is not None and edges[0] <= marker <= edges[-1] and edges[-1] > edges[0]:
        if plot.get("log"):
            x = left + inner_w * math.log(marker / edges[0]) / math.log(edges[-1] / edges[0])
        else:
            x = left + inner_w * (marker - edges[0]) / (edges[-1] - edges[0])
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + inner_h}" stroke="{ALERT_COLOUR}" '
            f'stroke-width="2" stroke-dasharray="4 3"/>'
        )
        if not compact:
            anchor = "end" if x > width * 0.7 else "start"
            body.append(
                _text(
                    x + (-4 if anchor == "end" else 4),
                    top + 8,
                    f"{marker_label} {format_number(marker)}",
                    anchor,
                    10,
                    ALERT_COLOUR,
                )
            )
    if not compact:
        body.append(_text(left, height - 6, format_number(edges[0])))
        body.append(
            _text(
                left + inner_w,
                height - 6,
                format_number(edges[-1]) + (" (log scale)" if plot.get("log") else ""),
                "end",
            )
        )
        outside = _outside_note(plot)
        if outside:
            body.append(_text(left + inner_w / 2, height - 6, outside, "middle", 10, "#64748b"))
        body += _legend(left + inner_w - 150, 4)
    return _svg(width, height, body, label)


def _outside_note(plot: dict) -> str:
    current = plot.get("current_outside") or [0, 0]
    below, above = (current[0] or 0), (current[1] or 0)
    # The range covers the middle 99 % of both samples, so up to ~0.5 % outside on each side is expected.
    if max(below, above) < 0.01:
        return ""
    return f"outside the range shown: now {100 * below:.1f}% below, {100 * above:.1f}% above"


def _legend(x: float, y: float) -> list[str]:
    return [
        f'<rect x="{x:.1f}" y="{y}" width="10" height="10" fill="{REFERENCE_COLOUR}"/>',
        _text(x + 14, y + 9, "reference", size=10),
        f'<rect x="{x + 75:.1f}" y="{y}" width="10" height="10" fill="{CURRENT_COLOUR}" fill-opacity="0.6"/>',
        _text(x + 89, y + 9, "current", size=10),
    ]


def _bars(plot: dict, width: int, height: int, compact: bool, label: str) -> str:
    labels = plot["labels"]
    left, right, top, bottom = (2, 2, 2, 2) if compact else (8, 8, 18, 34)
    inner_w, inner_h = width - left - right, height - top - bottom
    peak = max([*(v or 0 for v in plot["reference"]), *(v or 0 for v in plot["current"])] or [0]) or 1.0
    group_w = inner_w / max(len(labels), 1)
    bar_w = max(group_w * 0.4, 0.5)
    body = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for i, name in enumerate(labels):
        x = left + i * group_w + group_w * 0.1
        for j, (series, colour) in enumerate((("reference", REFERENCE_COLOUR), ("current", CURRENT_COLOUR))):
            value = plot[series][i] or 0
            h = inner_h * value / peak
            body.append(
                f'<rect x="{x + j * bar_w:.1f}" y="{top + inner_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} {series}: '
                f"{100 * value:.1f}%</title></rect>"
            )
        if not compact:
            short = name if len(name) <= 12 else name[:11] + "…"
            body.append(_text(x + bar_w, height - 20, short, "middle", 10))
    body.append(f'<line x1="{left}" y1="{top + inner_h}" x2="{left + inner_w}" y2="{top + inner_h}" stroke="#64748b"/>')
    if not compact:
        body += _legend(left + inner_w - 150, 4)
    return _svg(width, height, body, label)


def line_chart(
    x_labels: list[str],
    series: dict[str, list[float | None]],
    width: int = 900,
    height: int = 220,
    hline: float | None = None,
    hline_label: str = "",
    percent: bool = False,
    label: str = "chart",
    alert: list[bool] | None = None,
    y_max: float | None = None,
) -> str:
    """Lines over partitions (gaps for None), an optional dashed reference line, red dots on the first series
    where ``alert``."""
    left, right, top, bottom = 56, 16, 24, 40
    inner_w, inner_h = width - left - right, height - top - bottom
    values = [v for points in series.values() for v in points if v is not None]
    if not values:
        return _svg(width, 40, [_text(8, 24, "no data in these reports", colour="#64748b")], label)
    if hline is not None:
        values.append(hline)
    peak = y_max if y_max is not None else (max(values) * 1.1 or 1.0)
    floor = min(0.0, min(values or [0.0]))
    n = len(x_labels)

    pad = 36  # keeps the first and last labels inside the chart

    def x_at(i: int) -> float:
        return left + pad + ((inner_w - 2 * pad) * i / (n - 1) if n > 1 else (inner_w - 2 * pad) / 2)

    def y_at(v: float) -> float:
        return top + inner_h - inner_h * (v - floor) / ((peak - floor) or 1.0)

    def fmt(v: float) -> str:
        return f"{100 * v:.3g}%" if percent else format_number(v)

    body = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for tick in range(5):
        value = floor + (peak - floor) * tick / 4
        y = y_at(value)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + inner_w}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        body.append(_text(left - 6, y + 4, fmt(value), "end", 10))
    shown = _short_labels(x_labels)
    step = max(1, math.ceil(n / 10))
    for i, name in enumerate(shown):
        if i % step == 0 or (i == n - 1 and (n - 1) % step >= step / 2):
            body.append(_text(x_at(i), height - 22, name, "middle", 10))
    if hline is not None:
        y = y_at(hline)
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + inner_w}" y2="{y:.1f}" stroke="{ALERT_COLOUR}" '
            f'stroke-dasharray="5 4"/>'
        )
        body.append(_text(left + inner_w, y - 4, f"{hline_label} {fmt(hline)}", "end", 10, ALERT_COLOUR))
    for k, (name, points) in enumerate(series.items()):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        segments, current = [], []
        for i, value in enumerate(points):
            if value is None:
                if current:
                    segments.append(current)
                current = []
            else:
                current.append(f"{x_at(i):.1f},{y_at(value):.1f}")
        if current:
            segments.append(current)
        for segment in segments:
            body.append(f'<polyline points="{" ".join(segment)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, value in enumerate(points):
            if value is not None:
                flagged = alert is not None and k == 0 and alert[i]
                body.append(
                    f'<circle cx="{x_at(i):.1f}" cy="{y_at(value):.1f}" r="{4 if flagged else 2.5}" '
                    f'fill="{ALERT_COLOUR if flagged else colour}"><title>{escape(x_labels[i])} {escape(name)}: '
                    f"{fmt(value)}</title></circle>"
                )
        legend_x = left + 8 + k * 120
        body.append(f'<rect x="{legend_x}" y="6" width="12" height="4" fill="{colour}"/>')
        body.append(_text(legend_x + 16, 12, name, size=10))
    return _svg(width, height, body, label)


def _short_labels(labels: list[str]) -> list[str]:
    """Partition names without a shared ``key=`` prefix (``day=2026-11-01`` -> ``2026-11-01``)."""
    prefixes = {label.split("=", 1)[0] for label in labels if "=" in label}
    if len(prefixes) == 1 and all("=" in label and "/" not in label for label in labels):
        return [label.split("=", 1)[1] for label in labels]
    return labels


def latent_scatter(
    reference: list[float | None],
    current: list[float | None],
    highlight: dict[int, str],
    width: int = 440,
    height: int = 340,
    label: str = "latent usage",
) -> str:
    """Firing frequency now (y) vs in the reference (x), square-root axes; off-diagonal latents shifted."""
    left, right, top, bottom = 48, 16, 16, 40
    inner_w, inner_h = width - left - right, height - top - bottom
    peak = max([v or 0 for v in [*reference, *current]] or [0]) or 1.0
    scale = math.sqrt(peak)

    def px(v: float) -> float:
        return left + inner_w * math.sqrt(max(v, 0)) / scale

    def py(v: float) -> float:
        return top + inner_h - inner_h * math.sqrt(max(v, 0)) / scale

    body = [
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(peak):.1f}" y2="{py(peak):.1f}" stroke="#cbd5e1" '
        f'stroke-dasharray="4 4"/>',
        f'<line x1="{left}" y1="{top + inner_h}" x2="{left + inner_w}" y2="{top + inner_h}" stroke="#64748b"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + inner_h}" stroke="#64748b"/>',
    ]
    for fraction in (0.01, 0.05, 0.2, 0.5):
        if fraction <= peak:
            body.append(_text(px(fraction), top + inner_h + 14, f"{100 * fraction:g}%", "middle", 10))
            body.append(_text(left - 4, py(fraction) + 3, f"{100 * fraction:g}%", "end", 10))
    body.append(_text(left + inner_w / 2, height - 6, "firing frequency in the reference", "middle", 11))
    body.append(
        _text(12, top + inner_h / 2, "now", "middle", 11, extra=f'transform="rotate(-90 12 {top + inner_h / 2:.1f})"')
    )
    for latent, (r, c) in enumerate(zip(reference, current)):
        r, c = r or 0.0, c or 0.0
        marked = latent in highlight
        body.append(
            f'<circle cx="{px(r):.1f}" cy="{py(c):.1f}" r="{4 if marked else 2.5}" '
            f'fill="{ALERT_COLOUR if marked else CURRENT_COLOUR}" fill-opacity="{0.9 if marked else 0.5}">'
            f"<title>latent {latent}: {100 * r:.2f}% → {100 * c:.2f}%{escape(highlight.get(latent, ''))}"
            f"</title></circle>"
        )
        if marked:
            body.append(_text(px(r) + 6, py(c) + 4, f"#{latent}", size=10, colour=ALERT_COLOUR))
    return _svg(width, height, body, label)
