"""anomalies.html from a real small lake: trained, scored, grouped into incidents, reviewed; then opened in Chromium.

One outage of one host crosses midnight (one incident in two partitions); its rows carry a `service` value that is
an HTML script tag, which must reach the pages as text, never as markup.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl
import pytest
import yaml

from flows.cli import main
from sae_pipeline import pipeline, storage, tables, updating
from sae_pipeline.config import load_config
from sae_pipeline.incidents import build, page, reviews
from sae_pipeline.incidents.contract import REVIEW_COLUMNS
from tests.conftest import add_outage_rows, moto_s3, write_lake_config
from tests.test_drift_browser import CHROMIUM, open_in_chromium

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
HOST = "web-outage"
SCRIPT = '<script>document.title="pwned"</script>'
OUTAGE = [
    dt.datetime(2026, 11, 1, 23, 30),
    dt.datetime(2026, 11, 1, 23, 45),
    dt.datetime(2026, 11, 2, 0, 0),
    dt.datetime(2026, 11, 2, 0, 10),
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """Two days trained on, the outage added, both scored; incidents and pages written (what a run's last steps
    do); the outage's incident reviewed as an anomaly and the pages written again (what `review mark` does)."""
    root = tmp_path_factory.mktemp("anomaly-page")
    config = load_config(write_lake_config(root, days=2, rows_per_day=400, max_steps=40))
    version = updating.train_or_update(config, tables.partition_records(config.lake)).model_version
    add_outage_rows(root / "lake", HOST, OUTAGE, service=SCRIPT)
    for record in tables.partition_records(config.lake):
        pipeline.score_partition(config, record, version, "run", T0)
    pipeline.write_drift_trend(config)
    build.write_incidents(config)
    outage = build.read_incidents(config).filter(pl.col("entity") == HOST).row(0, named=True)
    record = reviews.incident_verdict(outage, [], "anomaly", "disk full <b>on purpose</b>", "test")
    reviews.append_reviews(config, pl.DataFrame([record], schema=REVIEW_COLUMNS))
    build.write_incidents(config)
    page.write_anomaly_pages(config)
    return root


def _config(lake: Path):
    return load_config(lake / "config.yaml")


def _outage(lake: Path) -> dict:
    return build.read_incidents(_config(lake)).filter(pl.col("entity") == HOST).row(0, named=True)


def test_pages_show_incidents_rows_reviews_and_models(lake):
    config = _config(lake)
    drift_dir = Path(config.output.drift_uri)
    incidents = build.read_incidents(config)
    outage = _outage(lake)
    assert outage["partitions"] == ["day=2026-11-01", "day=2026-11-02"] and outage["rows"] == 4
    assert outage["status"] == "closed" and outage["verdict"] == "anomaly"

    index = (drift_dir / "anomalies.html").read_text()
    assert f"{(incidents.get_column('status') == 'open').sum()} open incident(s) of {incidents.height}" in index
    for incident_id in incidents.get_column("incident_id"):
        assert f"<code>{incident_id}</code>" in index  # every incident listed
    assert 'href="day=2026-11-02/anomalies.html#incident-' + outage["incident_id"] + '"' in index
    assert f"Model {outage['model_version']}: 2 partition(s), compared against the training sample of model" in index

    # Newest first: the incidents appear in the order of their end, latest first.
    listed = index[index.index('<table id="incidents">') :]
    positions = {i: listed.index(f"<code>{i}</code>") for i in incidents.get_column("incident_id")}
    ends = incidents.sort(["end", "peak_score"], descending=True, nulls_last=True)
    assert sorted(positions, key=positions.get) == ends.get_column("incident_id").to_list()
    # Above them, the open ones again, most severe (lowest p-value) first; the reviewed outage is not among them.
    severe = index[index.index('<table id="severe">') : index.index('<table id="incidents">')]
    open_ones = incidents.filter(pl.col("status") == "open").sort("min_pvalue")
    positions = {i: severe.index(f"<code>{i}</code>") for i in open_ones.get_column("incident_id")}
    assert sorted(positions, key=positions.get) == open_ones.get_column("incident_id").to_list()
    assert outage["incident_id"] not in severe

    day2 = (drift_dir / "day=2026-11-02" / "anomalies.html").read_text()
    section = day2[day2.index(f'id="incident-{outage["incident_id"]}"') :]
    section = section[: section.index("</section>")]
    assert "4</b> flagged row(s), 2 in this partition" in section
    assert "closed: anomaly" in section and "disk full &lt;b&gt;on purpose&lt;/b&gt;" in section
    assert 'href="../day=2026-11-01/anomalies.html#incident-' in section  # its other partition
    assert section.count("<code>web-outage@2026-11-02T") == 2  # both of its rows here, with their keys
    # Each row's explaining columns with the row's value beside its baseline's typical value.
    assert re.search(r"<b>latency_ms</b> 6e\+04 <span class=\"muted\">\(typical [0-9.]+ · \d+% of", section)
    assert "Scored by model " + outage["model_version"] + " · compared against the training sample" in day2
    # Each row's most active latents, recomputed with the version that scored it, with the columns they weigh most.
    assert "recomputed for the rows shown with the model version that scored them" in day2
    assert re.search(r"<li>#\d+ <b>[0-9.e+]+</b> <span class=\"muted\">\((\w+, ){2}\w+\)</span></li>", section)
    assert 'href="report.html#latents"' in day2

    # The drift report and the trend page name the model and reference, and link to the pages.
    report = (drift_dir / "day=2026-11-02" / "report.html").read_text()
    assert f"Model {outage['model_version']} · compared against the training sample of model" in report
    assert 'href="anomalies.html"' in report and 'href="../anomalies.html"' in report
    trend = (drift_dir / "index.html").read_text()
    assert 'href="anomalies.html"' in trend and "<th>Model</th>" in trend and "<th>Scored rows</th>" in trend
    assert 'href="day=2026-11-02/anomalies.html"' in trend


def test_column_values_are_escaped(lake):
    drift_dir = Path(_config(lake).output.drift_uri)
    escaped = '&lt;script&gt;document.title="pwned"&lt;/script&gt;'.replace('"', "&quot;")
    for path in [drift_dir / "anomalies.html", *drift_dir.glob("*/anomalies.html")]:
        text = path.read_text()
        assert "<script" not in text.lower(), path
    day1 = (drift_dir / "day=2026-11-01" / "anomalies.html").read_text()
    assert escaped in day1  # the value is shown, as text


def test_partition_without_incidents_and_a_lake_without_any(lake, tmp_path):
    config = _config(lake)
    html = page.render_partition_page("day=2026-11-09", pl.DataFrame(), pl.DataFrame(), config)
    assert "No incidents in this partition" in html and "Model version not recorded" in html
    index = page.render_index(build.read_incidents(config).clear(), {}, {})
    assert "No incidents in 0 scored partition(s)" in index


def _copy(lake: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(lake, copy)
    raw = yaml.safe_load((copy / "config.yaml").read_text())
    raw["lake"]["uri"], raw["output"]["uri"] = str(copy / "lake"), str(copy / "out")
    (copy / "config.yaml").write_text(yaml.safe_dump(raw))
    return copy


def test_pages_are_rewritten_only_when_what_they_show_changed(lake, tmp_path):
    config = _config(_copy(lake, tmp_path))
    names = ["day=2026-11-01", "day=2026-11-02"]
    again = page.write_anomaly_pages(config)
    assert again.unchanged == names and again.partition_uris == {}
    build.write_incidents(config)  # rebuilt, same incidents: the pages stay
    assert page.write_anomaly_pages(config).unchanged == names
    record = next(r for r in tables.partition_records(config.lake) if r.name == names[1])
    pipeline.score_partition(config, record, _outage(lake)["model_version"], "rerun", T0)
    build.write_incidents(config)
    pages = page.write_anomaly_pages(config)  # the outage's page on day 1 did not change: its incident did not
    assert list(pages.partition_uris) == [names[1]] and pages.unchanged == [names[0]]
    assert Path(pages.partition_uris[names[1]]).read_text().rstrip().endswith("-->")


def test_a_review_rewrites_the_pages_of_the_partitions_it_changes(lake, tmp_path, capsys):
    copy = _copy(lake, tmp_path)
    config = _config(copy)
    target = build.read_incidents(config).filter(pl.col("status") == "open").row(0, named=True)
    partition = target["partitions"][-1]
    path = Path(page.page_uri(config, partition))
    untouched = [p for p in Path(config.output.drift_uri).glob("*/anomalies.html") if p.parent.name != partition]
    stamps = {p: p.stat().st_mtime_ns for p in untouched}
    assert "closed: normal" not in path.read_text()
    shutil.rmtree(config.output.models_uri)  # the latents of the rows shown come from the page's cache

    assert main(["review", "mark", "--config", str(copy / "config.yaml"), target["incident_id"], "normal"]) == 0
    assert "anomalies.html" in capsys.readouterr().out
    section = path.read_text().split(f'id="incident-{target["incident_id"]}"')[1].split("</section>")[0]
    assert "closed: normal" in section and re.search(r"<li>#\d+ <b>", section)
    assert "not available" not in path.read_text()
    index = Path(page.page_uri(config)).read_text()
    assert f"{len(build.read_incidents(config).filter(pl.col('status') == 'open'))} open incident(s)" in index
    assert all(p.stat().st_mtime_ns == stamps[p] for p in untouched)  # pages whose incidents did not change


def test_pages_are_written_on_s3(lake, tmp_path):
    import pyarrow.fs as pafs

    with moto_s3("pages"):
        s3, _ = storage.filesystem_for("s3://pages/out")
        pafs.copy_files(str(lake / "out"), "pages/out", destination_filesystem=s3)
        raw = yaml.safe_load((lake / "config.yaml").read_text())
        raw["output"]["uri"] = "s3://pages/out"
        (tmp_path / "s3.yaml").write_text(yaml.safe_dump(raw))
        config = load_config(tmp_path / "s3.yaml")
        storage.clear_folder(config.output.models_uri)  # retention removed the version that scored the rows
        for suffix in ("anomalies.html", page.LATENTS_FILE):
            for uri in storage.list_files(config.output.drift_uri, suffix):
                storage.delete_file(uri)  # pages and latents written before would be up to date
        pages = page.write_anomaly_pages(config)
        assert pages.index_uri == "s3://pages/out/drift/anomalies.html"
        assert set(pages.partition_uris) == {"day=2026-11-01", "day=2026-11-02"}
        outage = _outage(lake)
        assert outage["incident_id"] in storage.read_bytes(pages.index_uri).decode()
        assert (
            f'id="incident-{outage["incident_id"]}"'
            in storage.read_bytes(pages.partition_uris["day=2026-11-01"]).decode()
        )
        day1 = storage.read_bytes(pages.partition_uris["day=2026-11-01"]).decode()
        assert f"not available for model {outage['model_version']}" in day1  # the page says why, and still renders
        assert not storage.list_files("s3://pages/out/drift", ".tmp")  # staged writes were moved into place


def test_links_from_partitions_with_several_keys_and_odd_characters(lake):
    config = _config(lake)
    names = {"day=2026-11-01": "site=a b#1/day=2026-11-01", "day=2026-11-02": "site=a b#1/day=2026-11-02"}
    incidents = build.read_incidents(config).with_columns(pl.col("partitions").list.eval(pl.element().replace(names)))
    outage = incidents.filter(pl.col("entity") == HOST).row(0, named=True)
    html = page.render_partition_page(names["day=2026-11-02"], incidents, pl.DataFrame(), config)
    hrefs = _parse(html).hrefs
    assert "../../anomalies.html" in hrefs and "../../index.html" in hrefs and "report.html" in hrefs
    assert f"../../site=a%20b%231/day=2026-11-01/anomalies.html#incident-{outage['incident_id']}" in hrefs
    index = page.render_index(incidents, {}, {})
    assert f"site=a%20b%231/day=2026-11-02/anomalies.html#incident-{outage['incident_id']}" in _parse(index).hrefs


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if attrs.get("id"):
            self.ids.add(attrs["id"])


def _parse(html: str) -> _Links:
    links = _Links()
    links.feed(html)
    return links


def _check_links(page_path: Path, dom: str) -> int:
    """Every link of a rendered page leads to an existing file (and, with a fragment, to an element there)."""
    checked = 0
    for href in _parse(dom).hrefs:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.netloc, f"{page_path}: non-relative link {href}"
        target = (page_path.parent / unquote(parts.path)).resolve() if parts.path else page_path
        assert target.is_file(), f"{page_path}: {href} leads nowhere"
        if parts.fragment:
            assert parts.fragment in _parse(target.read_text()).ids, f"{page_path}: {href}: no such element"
        checked += 1
    return checked


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: the browser check is skipped")
def test_anomalies_pages_in_chromium(lake, tmp_path):
    drift_dir = Path(_config(lake).output.drift_uri)
    outage = _outage(lake)
    top = build.read_incidents(_config(lake)).row(0, named=True)  # newest first, the top of the page

    index_path = drift_dir / "anomalies.html"
    dom, console = open_in_chromium(index_path, tmp_path / "profile")
    assert console == []
    assert "<title>Anomalies over the lake</title>" in dom  # no script ran (it would have changed the title)
    first_row = dom[dom.index('<table id="incidents">') :]
    first_row = first_row[first_row.index("</th></tr>") :][:3000]
    assert top["incident_id"] in first_row and (top["entity"] or "-") in first_row
    assert top["top_features"][0] in first_row
    assert _check_links(index_path, dom) >= 2 + build.read_incidents(_config(lake)).height

    day1 = drift_dir / "day=2026-11-01" / "anomalies.html"
    dom, console = open_in_chromium(day1, tmp_path / "profile")
    assert console == [] and "<title>Anomalies: day=2026-11-01</title>" in dom
    assert f'id="incident-{outage["incident_id"]}"' in dom and HOST in dom
    assert "&lt;script&gt;" in dom  # the column value is text in the rendered page
    assert _check_links(day1, dom) >= 4

    for other in (drift_dir / "index.html", drift_dir / "day=2026-11-02" / "report.html"):
        dom, console = open_in_chromium(other, tmp_path / "profile")
        assert console == [] and "anomalies.html" in dom
        _check_links(other, dom)


def _check_latents_against_scoring(config, partition: str) -> int:
    """The latents a page recomputes for `partition`'s flagged rows are the largest codes of scoring's own forward
    pass over the partition's valid rows (with their history, read from the lake as scoring does)."""
    from sae_pipeline import context
    from sae_pipeline.registry import ModelRegistry
    from sae_pipeline.schema import input_dtypes
    from sae_pipeline.scoring import score_frame

    rows = pl.read_parquet(Path(config.output.flagged_uri) / partition / "part-0.parquet")
    registry = ModelRegistry(config.output.models_uri)
    order = build.committed_partitions(config)
    latents = page.row_latents(config, partition, rows, registry, order, top=2)
    assert "not available" not in latents.note
    artifact = registry.load(rows.item(0, "model_version"))
    record = next(r for r in tables.partition_records(config.lake) if r.name == partition)
    valid = pl.read_parquet(Path(config.output.scored_uri) / partition).select(list(input_dtypes(config)))
    codes = score_frame(context.with_history(config, valid, record), artifact, 3, T0).codes
    for position in rows.get_column("row_position"):
        row_codes = codes[position]
        expected = [int(latent) for latent in (-row_codes).argsort(kind="stable")[:2] if row_codes[latent] > 0]
        assert [latent for latent, _, _ in latents.by_position[position]] == expected
    return rows.height


def test_recomputed_latents_are_the_codes_scoring_saw(lake):
    assert _check_latents_against_scoring(_config(lake), "day=2026-11-02") >= 2


def test_recomputed_latents_with_context_history(tmp_path):
    context = {"entity": "host_id", "min_group_rows": 5, "history": {"window": 4}}
    config = load_config(write_lake_config(tmp_path, days=2, rows_per_day=300, context=context, max_steps=40))
    version = updating.train_or_update(config, tables.partition_records(config.lake)).model_version
    for record in tables.partition_records(config.lake):
        pipeline.score_partition(config, record, version, "run", T0)
    build.write_incidents(config)
    page.write_anomaly_pages(config)
    assert _check_latents_against_scoring(config, "day=2026-11-02") >= 1  # its first rows' history is day 1's end
    html = Path(page.page_uri(config, "day=2026-11-02")).read_text()
    assert "recomputed for the rows shown" in html and re.search(r"<li>#\d+ <b>", html)
