"""A partition's drift report files: `drift/<partition>/report.json`, `report.html` and `report.md`, written together.

Scoring writes them once the partition's rows are counted; the volume check (`sae_pipeline.volume.add_to_report`)
writes them again, from the same report plus its `volume` verdict, after the run has committed the partitions it
judges against. Each file is written atomically (`sae_pipeline.storage`); report.json first, so the pages never
show what report.json does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_pipeline import drift, storage
from sae_pipeline.config import PipelineConfig
from sae_pipeline.incidents.page import ANOMALIES_PAGE


def report_folder(config: PipelineConfig, partition: str) -> str:
    """The partition's drift report folder, `drift/<partition>/`."""
    return storage.join_uri(config.output.drift_uri, partition)


def report_links(partition: str) -> dict[str, str]:
    """The links under a partition report's header: its anomalies page, the lake's incidents and the trend page."""
    up = "../" * (partition.count("/") + 1)
    return {
        "Anomalies in this partition": ANOMALIES_PAGE,
        "All incidents": up + ANOMALIES_PAGE,
        "Drift over the lake": up + "index.html",
    }


@dataclass(frozen=True)
class RenderedReport:
    """A partition's drift report and its files' contents (URI: bytes), report.json first."""

    report: dict
    files: dict[str, bytes]

    def write(self) -> None:
        for uri, content in self.files.items():
            storage.write_bytes(uri, content)


def render_report_files(config: PipelineConfig, partition: str, report: dict) -> RenderedReport:
    """Validate `report` and render report.json, report.html and report.md from it, without writing them (scoring
    renders while the partition's last rows are still being written)."""
    drift.validate_report(report)
    folder = report_folder(config, partition)
    html_uri = storage.join_uri(folder, "report.html")
    files = {
        storage.join_uri(folder, "report.json"): storage.json_bytes(report),
        html_uri: drift.render_html(report, links=report_links(partition)).encode(),
        storage.join_uri(folder, "report.md"): drift.render_markdown(report, html_uri).encode(),
    }
    return RenderedReport(report, files)


def write_report_files(config: PipelineConfig, partition: str, report: dict) -> None:
    """Validate `report` and write report.json, then report.html and report.md rendered from it."""
    render_report_files(config, partition, report).write()
