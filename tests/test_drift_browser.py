"""report.html and the trend page as a person sees them: real headless Chromium, no console messages, verdict shown.

Chromium (Debian's `chromium`, `.ci/run` installs it) is run with `--dump-dom` (the DOM after rendering) and
`--enable-logging=stderr --v=0`, which writes every console message as an `INFO:CONSOLE` line to stderr. The pages
have no script, so any console message at all is a failure. A control page with a console error and an uncaught
exception proves the harness does see console messages. Skipped, with the reason, where chromium is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sae_pipeline.config import DriftConfig
from sae_pipeline.drift import build_reference, compare_to_reference, render_html, render_trend

CHROMIUM = next(
    (
        path
        for path in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if path and Path(path).exists()
    ),
    None,
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium): the browser check of report.html is skipped",
)

CONSOLE_LINE = re.compile(r":CONSOLE(?:\(\d+\))?:?\d*\]\s*(.*)")


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """Render ``page`` headless; return the DOM after rendering and the console messages it logged."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    console = [match.group(1) for line in result.stderr.splitlines() if (match := CONSOLE_LINE.search(line))]
    return result.stdout, console


def _reports() -> list[dict]:
    rng = np.random.default_rng(0)
    n = 5_000

    def frame(shift: float) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "cpu_pct": rng.normal(50 + 20 * shift, 10, n),
                "latency_ms": rng.lognormal(3 + shift, 0.5, n),
                "region": rng.choice(["eu", "us", "ap"], n),
            }
        )

    scores = rng.gamma(2.0, 1.0, n)
    codes = np.where(rng.random((n, 8)) < 0.2, rng.random((n, 8)), 0.0)
    reference = build_reference(
        frame(0.0),
        ["cpu_pct", "latency_ms"],
        ["region"],
        scores=scores,
        codes=codes,
        decoder_weights=rng.normal(size=(5, 8)),
        feature_sources=["cpu_pct", "latency_ms", "region", "region", "region"],
        threshold=float(np.quantile(scores, 0.99)),
    )
    reports = []
    for day, shift in enumerate([0.0, 0.0, 1.0], start=1):
        current_scores = rng.gamma(2.0, 1.0 + shift, n)
        reports.append(
            compare_to_reference(
                reference,
                frame(shift),
                scores=current_scores,
                flagged=current_scores > reference["threshold"],
                expected_anomaly_rate=0.01,
                partition=f"day=2026-11-0{day}",
                codes=codes * (1 + shift),
                settings=DriftConfig(),
                quarantined_rows=3,
                quarantine_reasons={"cpu_pct: max": 3},
            )
        )
    return reports


def test_report_and_trend_render_in_chromium_without_console_messages(tmp_path):
    reports = _reports()
    assert reports[-1]["dataset_drift"] and not reports[0]["dataset_drift"]
    pages = {}
    for report in reports:
        folder = tmp_path / "drift" / report["partition"]
        folder.mkdir(parents=True)
        pages[report["partition"]] = folder / "report.html"
        pages[report["partition"]].write_text(render_html(report))
    trend = tmp_path / "drift" / "index.html"
    trend.write_text(render_trend(reports))

    dom, console = open_in_chromium(pages["day=2026-11-03"], tmp_path / "profile")
    assert console == []
    assert 'id="verdict"' in dom and "Dataset drift detected: 2 of 3 columns drifted" in dom
    assert dom.count("<svg") >= 5

    dom, console = open_in_chromium(pages["day=2026-11-01"], tmp_path / "profile")
    assert console == [] and "No dataset drift: 0 of 3 columns drifted" in dom

    dom, console = open_in_chromium(trend, tmp_path / "profile")
    assert console == []
    assert "Dataset drift in 1 of 3 partitions (latest: day=2026-11-03)" in dom and dom.count("<svg") == 3


def test_the_harness_sees_console_errors(tmp_path):
    control = tmp_path / "control.html"
    control.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><p>x</p>'
        '<script>console.error("boom"); missingFunction();</script></body></html>'
    )
    _, console = open_in_chromium(control, tmp_path / "profile")
    assert any("boom" in message for message in console)
    assert any("missingFunction" in message for message in console)
