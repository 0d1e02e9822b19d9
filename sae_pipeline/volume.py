"""Volume and freshness: is a partition as large as its predecessors, is its quarantined share usual, and is the
lake keeping its cadence?

- **Volume** (`check_volume`): each scored partition's rows read and quarantined share against the ledger's
  entries of the partitions before it in the lake's order (the last `volume.history` of them). The band is robust:
  median ± `volume.band_mads` x the MAD scaled to a standard deviation (x 1.4826), and never narrower than
  ± `volume.rows_tolerance` x the median (a lake whose partitions all have exactly 2,000 rows has a MAD of 0).
  The quarantined share is only judged from above. Fewer than `volume.min_history` earlier partitions: `no_history`.
- **Freshness** (`check_freshness`, with `lake.expected_every`): a partition's time is its first `date` key (plus its
  `hour` key when it has an int one); a period between the first and the latest partition with no partition is
  missing; the lake is late when a whole period has ended since the latest partition's period ended (the next
  partition was due) and it is still not there.

The verdicts are small records: the flows put them in the run summary, the drift report (`report.json`'s optional
`volume` field) and Prefect events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import numpy as np

from sae_pipeline import report_files, storage
from sae_pipeline.config import PipelineConfig, VolumeConfig, parse_duration
from sae_pipeline.drift.report import describe_volume, volume_unusual
from sae_pipeline.ledger import Ledger, LedgerEntry
from sae_pipeline.records import Record
from sae_pipeline.tables.keys import partition_values

#: Scale that turns a MAD into a standard deviation for normal data.
MAD_SCALE = 1.4826
#: At most this many missing periods are listed (all are counted).
MAX_MISSING_LISTED = 50


class VolumeVerdict(Record):
    """One scored partition's volume: rows read against the band of earlier partitions (`low`, `high`, `ok`, or
    `no_history`), and its quarantined share against theirs (`high`, `ok`, `no_history`)."""

    partition: str
    history: int
    rows_in: int
    rows_status: Literal["ok", "low", "high", "no_history"]
    rows_median: float | None = None
    rows_low: float | None = None
    rows_high: float | None = None
    quarantined_share: float
    quarantine_status: Literal["ok", "high", "no_history"]
    quarantine_median: float | None = None
    quarantine_high: float | None = None

    @property
    def unusual(self) -> bool:
        return volume_unusual(self.model_dump())

    def describe(self) -> str:
        """One line: what is unusual, against which band."""
        return f"{self.partition}: {describe_volume(self.model_dump())}"


class FreshnessVerdict(Record):
    """The lake against its cadence (`lake.expected_every`): the latest partition and its time, the periods with no
    partition between the first and the latest (`missing`, at most `MAX_MISSING_LISTED` listed; `n_missing` counts
    them all), and whether the next one is `late` (due since `due_by`, checked at `checked_at`)."""

    expected_every: str
    latest: str | None
    latest_time: dt.datetime | None
    missing: list[str]
    n_missing: int
    late: bool
    next_expected: str | None
    due_by: dt.datetime | None
    checked_at: dt.datetime

    def describe(self) -> str:
        if self.latest is None:
            return f"no partition in the lake (expected one every {self.expected_every})"
        parts = [f"latest partition {self.latest}"]
        if self.n_missing:
            listed = ", ".join(self.missing[:5]) + (" ..." if self.n_missing > 5 else "")
            parts.append(f"{self.n_missing} missing ({listed})")
        if self.late:
            parts.append(f"late: {self.next_expected} was due by {self.due_by:%Y-%m-%d %H:%M} UTC")
        return f"every {self.expected_every}: " + "; ".join(parts)


def _band(values: np.ndarray, mads: float) -> tuple[float, float]:
    """(median, scaled MAD x `mads`) of `values`."""
    median = float(np.median(values))
    return median, mads * MAD_SCALE * float(np.median(np.abs(values - median)))


def judge_volume(
    name: str, rows_in: int, rows_quarantined: int, earlier: Sequence[LedgerEntry], settings: VolumeConfig
) -> VolumeVerdict:
    """The verdict on one partition given the ledger entries of the partitions before it (oldest first)."""
    share = rows_quarantined / rows_in if rows_in else 0.0
    history = list(earlier)[-settings.history :]
    found = {"partition": name, "history": len(history), "rows_in": rows_in, "quarantined_share": share}
    if len(history) < settings.min_history:
        return VolumeVerdict(**found, rows_status="no_history", quarantine_status="no_history")
    rows = np.array([entry.rows_in for entry in history], dtype=float)
    median, width = _band(rows, settings.band_mads)
    width = max(width, settings.rows_tolerance * median)
    low, high = median - width, median + width
    shares = np.array([entry.rows_quarantined / entry.rows_in if entry.rows_in else 0.0 for entry in history])
    share_median, share_width = _band(shares, settings.band_mads)
    share_high = share_median + max(share_width, settings.quarantine_tolerance)
    return VolumeVerdict(
        **found,
        rows_status="low" if rows_in < low else "high" if rows_in > high else "ok",
        rows_median=median,
        rows_low=low,
        rows_high=high,
        quarantine_status="high" if share > share_high else "ok",
        quarantine_median=share_median,
        quarantine_high=share_high,
    )


def partition_order(names: Sequence[str]) -> list[str]:
    """Partition names in the lake's order (by decoded key values)."""
    return sorted(names, key=lambda name: tuple(partition_values(name).values()))


def check_volume(config: PipelineConfig, partitions: Sequence[str]) -> list[VolumeVerdict]:
    """The volume verdict of each committed partition in `partitions`, against the ledger's entries before it in
    the lake's order (read once, after the run's commits). Partitions without a ledger entry are skipped."""
    entries = Ledger(config.output.ledger_uri).entries()
    order = partition_order(list(entries))
    verdicts = []
    for name in partition_order([name for name in partitions if name in entries]):
        entry = entries[name]
        earlier = [entries[other] for other in order[: order.index(name)]]
        verdicts.append(judge_volume(name, entry.rows_in, entry.rows_quarantined, earlier, config.volume))
    return verdicts


def add_to_report(config: PipelineConfig, verdict: VolumeVerdict) -> str:
    """Write the verdict into the partition's `report.json` (its optional `volume` field) and render its
    report.html and report.md again from it; return the URI of report.json."""
    folder = report_files.report_folder(config, verdict.partition)
    report = storage.read_json(storage.join_uri(folder, "report.json"))
    report["volume"] = verdict.model_dump(mode="json", exclude={"partition"})
    report_files.write_report_files(config, verdict.partition, report)
    return storage.join_uri(folder, "report.json")


def partition_time(values: dict[str, str], key_types: dict[str, str]) -> dt.datetime | None:
    """A partition's time: its first `date` key, plus its `hour` key (type int) when it has one (UTC, naive)."""
    day = next((values[key] for key, kind in key_types.items() if kind == "date" and key in values), None)
    if day is None:
        return None
    try:
        moment = dt.datetime.combine(dt.date.fromisoformat(day), dt.time())
        if key_types.get("hour") == "int" and "hour" in values:
            moment += dt.timedelta(hours=int(values["hour"]))
    except ValueError:
        return None
    return moment


def _period_name(moment: dt.datetime, key_types: dict[str, str]) -> str:
    """How a missing period is named: the partition name when the only key is the date, else the time."""
    if len(key_types) == 1 and moment.time() == dt.time():
        return f"{next(iter(key_types))}={moment.date().isoformat()}"
    return moment.isoformat(timespec="minutes")


def check_freshness(
    config: PipelineConfig, partitions: Sequence[str], now: dt.datetime | None = None
) -> FreshnessVerdict | None:
    """The lake's partitions (`partitions`: names) against `lake.expected_every` (None without one)."""
    every_text = config.lake.expected_every
    if every_text is None:
        return None
    every = parse_duration(every_text)
    key_types = dict(config.lake.partition_keys)
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    times = {}
    for name in partitions:
        moment = partition_time(partition_values(name), key_types)
        if moment is not None:
            times.setdefault(moment, name)
    found = {"expected_every": every_text, "checked_at": now.replace(tzinfo=dt.UTC)}
    if not times:
        return FreshnessVerdict(
            **found, latest=None, latest_time=None, missing=[], n_missing=0, late=False, next_expected=None, due_by=None
        )
    first, latest = min(times), max(times)
    missing, n_missing, moment = [], 0, first + every
    while moment < latest:
        if moment not in times:
            n_missing += 1
            if len(missing) < MAX_MISSING_LISTED:
                missing.append(_period_name(moment, key_types))
        moment += every
    due_by = latest + 2 * every  # the next period has ended: its partition should be there
    return FreshnessVerdict(
        **found,
        latest=times[latest],
        latest_time=latest,
        missing=missing,
        n_missing=n_missing,
        late=now >= due_by,
        next_expected=_period_name(latest + every, key_types),
        due_by=due_by.replace(tzinfo=dt.UTC),
    )
