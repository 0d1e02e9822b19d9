"""Deterministic sample data lake of server-fleet telemetry.

The pipeline needs a realistic lake to develop, test and demo against without
shipping real customer data. This module synthesises one: daily Hive-style
partitions (``day=YYYY-MM-DD/part-0.parquet``) of per-host metrics whose
columns are tied together by plausible relations (load drives CPU, CPU drives
latency and temperature, ...). A sparse autoencoder can learn that joint
distribution, and the rows that violate it are known exactly:

* ``label_is_anomaly`` / ``anomaly_kind`` carry the ground truth so detectors
  can be scored (the model must never be trained on these two columns);
* ``spike``, ``broken_correlation`` and ``rare_category`` rows are valid data
  that a model should flag, while ``invalid`` rows each break exactly one
  validation rule so the validator has something to reject;
* ``drifted`` days shift the load mix the way a real fleet drifts, so drift
  monitoring can be exercised without turning every row into an anomaly.

A second scenario, :func:`generate_context_lake`, is a fleet observed over
time (every host every 10 minutes) whose anomalies are only anomalous in
context: against the host's own normal, the hour of day, or metrics that
usually move together. Scoring each row alone cannot find them; it is the
lake the demo and the context features are measured on.

Everything is derived from ``numpy.random.default_rng`` seeded by the caller's
seed (and the day), so the same arguments always give the same bytes on disk.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow.parquet as pq

SERVICES = ("api", "web", "batch", "db")
SERVICE_SHARE = np.array([0.35, 0.30, 0.15, 0.20])
REGIONS = ("eu-west", "us-east", "us-west", "ap-south")
REGION_SHARE = np.array([0.40, 0.30, 0.20, 0.10])
FLEET_SIZE = 200

# Values that never occur in normal rows, used by ``rare_category`` anomalies.
RARE_REGIONS = ("sa-east", "me-central")
RARE_SERVICES = ("ml-train", "cache")

# Per-service behaviour, indexed like SERVICES.
REQUEST_LEVEL = np.array([100.0, 80.0, 45.0, 60.0])  # requests/s at mean load
CPU_IDLE = np.array([8.0, 5.0, 12.0, 10.0])  # cpu % with no traffic
CPU_SPAN = np.array([32.0, 28.0, 30.0, 30.0])  # extra cpu % per unit of relative load
MEM_LEVEL = np.array([45.0, 40.0, 60.0, 78.0])  # db keeps its cache in memory
LATENCY_BASE = np.array([40.0, 80.0, 300.0, 15.0])  # ms at idle
NET_IN_PER_REQUEST = np.array([0.05, 0.02, 0.50, 0.10])  # Mbps per request/s
NET_OUT_PER_REQUEST = np.array([0.20, 0.60, 0.30, 0.40])
DISK_LEVEL = np.array([5.0, 3.0, 80.0, 120.0])  # Mbps; batch and db hit the disk

ANOMALY_RATE = 0.03
ANOMALY_KINDS = ("spike", "broken_correlation", "rare_category")
SPIKE_COLUMNS = ("latency_ms", "net_out_mbps", "disk_io_mbps", "error_rate")
# One invalid row per rule, so every day exercises every validator check.
INVALID_RULES = (
    "host_id_null",
    "cpu_null",
    "cpu_over_100",
    "latency_negative",
    "error_rate_over_1",
    "temperature_inf",
)
DISK_GAP_RATE = 0.03
TEMPERATURE_GAP_RATE = 0.02

DRIFT_LOAD_FACTOR = 1.3
DRIFT_LATENCY_FACTOR = 1.1
DRIFT_BATCH_SHARE_FACTOR = 2.0

SCHEMA = {
    "event_time": pl.Datetime("us"),
    "host_id": pl.String,
    "region": pl.String,
    "service": pl.String,
    "hour": pl.Int32,
    "requests_per_s": pl.Float64,
    "cpu_pct": pl.Float64,
    "mem_pct": pl.Float64,
    "latency_ms": pl.Float64,
    "error_rate": pl.Float64,
    "net_in_mbps": pl.Float64,
    "net_out_mbps": pl.Float64,
    "disk_io_mbps": pl.Float64,
    "temperature_c": pl.Float64,
    "label_is_anomaly": pl.Boolean,
    "anomaly_kind": pl.String,
}

_MICROS_PER_HOUR = 3_600_000_000
_MICROS_PER_DAY = 24 * _MICROS_PER_HOUR


def _fleet(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (host_id, service index, region index) per host.

    The fleet depends on the seed only, not on the day, so a host keeps its
    service and region across the whole lake like a real machine would.
    """
    rng = np.random.default_rng(seed)
    counts = np.round(SERVICE_SHARE * FLEET_SIZE).astype(int)
    service = np.repeat(np.arange(len(SERVICES)), counts)
    region = rng.choice(len(REGIONS), size=service.size, p=REGION_SHARE)
    host_id = np.array([f"{SERVICES[s]}-{i:04d}" for i, s in enumerate(service)], dtype=object)
    return host_id, service, region


def _relative_load(hour_of_day: np.ndarray) -> np.ndarray:
    """Daily seasonality: 0.4 at 03:00, 1.6 at 15:00, mean 1."""
    return 1.0 + 0.6 * np.sin(2.0 * np.pi * (hour_of_day - 9.0) / 24.0)


def _cpu_from_requests(service: np.ndarray, requests: np.ndarray) -> np.ndarray:
    """Noise-free CPU implied by a request rate (linear, per-service slope)."""
    return CPU_IDLE[service] + CPU_SPAN[service] * requests / REQUEST_LEVEL[service]


def _drift_factor(full_factor: float, drift: float) -> float:
    """A drift factor at intensity `drift` (0: none, 1: the step drift of the drifted days, 2: twice as far)."""
    return 1.0 + (full_factor - 1.0) * drift if drift else 1.0


def _latency_from_cpu(service: np.ndarray, cpu: np.ndarray, noise: np.ndarray, drift: float) -> np.ndarray:
    """Latency grows with CPU, convexly once the host is saturated (> 70 %)."""
    saturation = np.maximum(cpu - 70.0, 0.0)
    latency = LATENCY_BASE[service] * (1.0 + 0.004 * cpu + 0.002 * saturation**2) * noise
    return latency * _drift_factor(DRIFT_LATENCY_FACTOR, drift)


def _temperature_from_cpu(cpu: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return 30.0 + 0.35 * cpu + noise


def _normal_rows(rng: np.random.Generator, service: np.ndarray, hour_of_day: np.ndarray, drift: float) -> dict:
    """Draw healthy telemetry where every metric follows from the request rate."""
    n = service.size
    load = _relative_load(hour_of_day) * _drift_factor(DRIFT_LOAD_FACTOR, drift)
    requests = REQUEST_LEVEL[service] * load * rng.lognormal(0.0, 0.15, n)
    cpu = np.clip(_cpu_from_requests(service, requests) + rng.normal(0.0, 4.0, n), 0.0, 100.0)
    mem = np.clip(MEM_LEVEL[service] + 0.1 * cpu + rng.normal(0.0, 3.0, n), 1.0, 95.0)
    latency = _latency_from_cpu(service, cpu, rng.lognormal(0.0, 0.1, n), drift)
    # Errors rise with latency relative to the service's own baseline.
    error_rate = np.clip(0.002 * (latency / LATENCY_BASE[service]) ** 2 * rng.lognormal(0.0, 0.3, n), 0.0, 0.05)
    return {
        "requests_per_s": requests,
        "cpu_pct": cpu,
        "mem_pct": mem,
        "latency_ms": latency,
        "error_rate": error_rate,
        "net_in_mbps": requests * NET_IN_PER_REQUEST[service] * rng.lognormal(0.0, 0.05, n),
        "net_out_mbps": requests * NET_OUT_PER_REQUEST[service] * rng.lognormal(0.0, 0.05, n),
        "disk_io_mbps": DISK_LEVEL[service] * (0.5 + 0.5 * load) * rng.lognormal(0.0, 0.2, n),
        "temperature_c": _temperature_from_cpu(cpu, rng.normal(0.0, 1.5, n)),
    }


def _inject_spikes(
    rng: np.random.Generator, metrics: dict, rows: np.ndarray, columns: tuple[str, ...] = SPIKE_COLUMNS
) -> None:
    """Blow up one of `columns` by 5-20x per row and leave the rest of the row untouched."""
    picks = rng.choice(len(columns), size=rows.size)
    factors = rng.uniform(5.0, 20.0, size=rows.size)
    for row, pick, factor in zip(rows, picks, factors):
        metrics[columns[pick]][row] *= factor
    if "error_rate" in columns:
        metrics["error_rate"][rows] = np.minimum(metrics["error_rate"][rows], 1.0)


def _inject_broken_correlation(
    rng: np.random.Generator,
    metrics: dict,
    rows: np.ndarray,
    service: np.ndarray,
    hour_of_day: np.ndarray,
    drift: float,
) -> None:
    """Decouple CPU from load: busy CPU with idle traffic, or the reverse.

    Requests, network, latency and temperature stay mutually consistent, so
    each marginal looks ordinary and only the CPU-vs-rest relation is wrong.
    """
    svc = service[rows]
    n = rows.size
    expected = REQUEST_LEVEL[svc] * _relative_load(hour_of_day[rows]) * _drift_factor(DRIFT_LOAD_FACTOR, drift)
    busy_cpu_idle_traffic = rng.random(n) < 0.5
    requests = np.where(
        busy_cpu_idle_traffic, expected * rng.uniform(0.05, 0.2, n), expected * rng.uniform(2.0, 3.0, n)
    )
    implied_cpu = np.clip(_cpu_from_requests(svc, requests), 0.0, 100.0)
    metrics["requests_per_s"][rows] = requests
    metrics["cpu_pct"][rows] = np.where(busy_cpu_idle_traffic, rng.uniform(85.0, 99.0, n), rng.uniform(1.0, 5.0, n))
    metrics["latency_ms"][rows] = _latency_from_cpu(svc, implied_cpu, rng.lognormal(0.0, 0.1, n), drift)
    metrics["temperature_c"][rows] = _temperature_from_cpu(implied_cpu, rng.normal(0.0, 1.5, n))
    metrics["net_in_mbps"][rows] = requests * NET_IN_PER_REQUEST[svc]
    metrics["net_out_mbps"][rows] = requests * NET_OUT_PER_REQUEST[svc]


def _inject_rare_category(
    rng: np.random.Generator,
    metrics: dict,
    rows: np.ndarray,
    host_id: np.ndarray,
    region: np.ndarray,
    service_name: np.ndarray,
) -> None:
    """Unseen region or service, with a memory-bound, near-idle load profile no normal service has."""
    n = rows.size
    new_region = rng.random(n) < 0.5
    for row, use_region, pick in zip(rows, new_region, rng.integers(0, 2, n)):
        if use_region:
            region[row] = RARE_REGIONS[pick]
        else:
            service_name[row] = RARE_SERVICES[pick]
            host_id[row] = f"{RARE_SERVICES[pick]}-{900 + row % 100:04d}"
    cpu = rng.uniform(55.0, 90.0, n)
    requests = rng.uniform(0.0, 2.0, n)
    metrics["requests_per_s"][rows] = requests
    metrics["cpu_pct"][rows] = cpu
    metrics["mem_pct"][rows] = rng.uniform(97.0, 100.0, n)
    metrics["latency_ms"][rows] = rng.uniform(500.0, 1500.0, n)
    metrics["error_rate"][rows] = rng.uniform(0.0, 0.002, n)
    metrics["net_in_mbps"][rows] = requests * 0.01
    metrics["net_out_mbps"][rows] = requests * 0.01
    metrics["disk_io_mbps"][rows] = rng.uniform(300.0, 600.0, n)
    metrics["temperature_c"][rows] = _temperature_from_cpu(cpu, rng.normal(0.0, 1.5, n))


def _inject_invalid(rng: np.random.Generator, metrics: dict, rows: np.ndarray, host_id: np.ndarray) -> None:
    """Break exactly one validation rule per row (NaN marks a null until the frame is built)."""
    for row, rule in zip(rows, INVALID_RULES):
        if rule == "host_id_null":
            host_id[row] = None
        elif rule == "cpu_null":
            metrics["cpu_pct"][row] = np.nan
        elif rule == "cpu_over_100":
            metrics["cpu_pct"][row] = 250.0
        elif rule == "latency_negative":
            metrics["latency_ms"][row] = -metrics["latency_ms"][row]
        elif rule == "error_rate_over_1":
            metrics["error_rate"][row] = rng.uniform(1.5, 5.0)
        elif rule == "temperature_inf":
            metrics["temperature_c"][row] = np.inf


def _sensor_gaps(rng: np.random.Generator, metrics: dict, is_labelled: np.ndarray) -> None:
    """Null disk and temperature readings at their normal rates (NaN until the frame is built).

    Gaps only hit healthy rows, so every labelled row stays fully observable.
    """
    rows = is_labelled.size
    metrics["disk_io_mbps"][~is_labelled & (rng.random(rows) < DISK_GAP_RATE)] = np.nan
    metrics["temperature_c"][~is_labelled & (rng.random(rows) < TEMPERATURE_GAP_RATE)] = np.nan


def generate_day(
    day: datetime.date, rows: int, seed: int, drifted: bool = False, drift: float | None = None
) -> pl.DataFrame:
    """Generate one day of fleet telemetry with labelled anomalies.

    The day's random stream is seeded from ``(seed, day)``, so a day can be
    regenerated on its own and matches the copy written by
    :func:`generate_sample_lake`. ``drifted`` raises load by 30 % (CPU and
    network follow it), doubles the share of ``batch`` traffic and adds 10 %
    latency: a distribution shift, not a batch of anomalies. ``drift`` sets the
    shift's intensity instead (1.0 is the drifted day, 0.5 half of it, 2.0
    twice as far), for lakes whose normal behaviour moves gradually.
    """
    drift = (1.0 if drifted else 0.0) if drift is None else drift
    rng = np.random.default_rng([seed, day.toordinal()])
    fleet_host_id, fleet_service, fleet_region = _fleet(seed)

    service_share = SERVICE_SHARE.copy()
    if drift:
        batch = SERVICES.index("batch")
        service_share[batch] *= _drift_factor(DRIFT_BATCH_SHARE_FACTOR, drift)
        others = np.arange(len(SERVICES)) != batch
        service_share[others] *= (1.0 - service_share[batch]) / service_share[others].sum()
    service = rng.choice(len(SERVICES), size=rows, p=service_share)
    host = np.empty(rows, dtype=int)
    for s in range(len(SERVICES)):
        in_service = service == s
        host[in_service] = rng.choice(np.flatnonzero(fleet_service == s), size=int(in_service.sum()))

    offsets = np.sort(rng.integers(0, _MICROS_PER_DAY, size=rows))
    hour_of_day = offsets / _MICROS_PER_HOUR
    metrics = _normal_rows(rng, service, hour_of_day, drift)

    host_id = fleet_host_id[host].copy()
    region = np.array(REGIONS, dtype=object)[fleet_region[host]]
    service_name = np.array(SERVICES, dtype=object)[service]

    n_invalid = min(len(INVALID_RULES), rows // 20)
    n_anomalies = min(round(rows * ANOMALY_RATE), rows - n_invalid)
    chosen = rng.permutation(rows)[: n_anomalies + n_invalid]
    anomaly_rows, invalid_rows = chosen[:n_anomalies], chosen[n_anomalies:]
    is_labelled = np.zeros(rows, dtype=bool)
    is_labelled[chosen] = True
    kind = np.full(rows, None, dtype=object)
    kind[anomaly_rows] = np.resize(np.array(ANOMALY_KINDS, dtype=object), n_anomalies)
    kind[invalid_rows] = "invalid"

    _inject_spikes(rng, metrics, np.flatnonzero(kind == "spike"))
    _inject_broken_correlation(rng, metrics, np.flatnonzero(kind == "broken_correlation"), service, hour_of_day, drift)
    _inject_rare_category(rng, metrics, np.flatnonzero(kind == "rare_category"), host_id, region, service_name)
    _inject_invalid(rng, metrics, invalid_rows, host_id)

    _sensor_gaps(rng, metrics, is_labelled)

    day_start = np.datetime64(day, "us")
    decimals = {"error_rate": 4}
    return pl.DataFrame(
        {
            "event_time": day_start + offsets.astype("timedelta64[us]"),
            "host_id": host_id.tolist(),
            "region": region.tolist(),
            "service": service_name.tolist(),
            "hour": (offsets // _MICROS_PER_HOUR).astype(np.int32),
            **{name: np.round(values, decimals.get(name, 2)) for name, values in metrics.items()},
            "label_is_anomaly": is_labelled,
            "anomaly_kind": kind.tolist(),
        },
        schema=SCHEMA,
    ).with_columns([pl.col(name).fill_nan(None) for name in metrics])


def generate_sample_lake(
    output_dir: str | os.PathLike,
    days: int = 10,
    rows_per_day: int = 2000,
    seed: int = 0,
    start: datetime.date = datetime.date(2026, 11, 1),
    drift_days: int = 2,
    gradual_shift: float = 0.0,
) -> list[pathlib.Path]:
    """Write ``days`` Hive partitions ``day=YYYY-MM-DD/part-0.parquet`` and return their paths.

    The ``day`` key lives only in the folder name, as Hive layout expects, so
    readers must enable hive partitioning to get it back. The last
    ``drift_days`` days are drifted. With ``gradual_shift`` > 0 the lake drifts
    gradually instead: day i of n has intensity ``gradual_shift * i / (n - 1)``
    (see :func:`generate_day`), so its normal behaviour moves a little every day.
    Files are overwritten and byte-for-byte reproducible for the same arguments.
    """
    root = pathlib.Path(output_dir)
    paths = []
    for index in range(days):
        day = start + datetime.timedelta(days=index)
        if gradual_shift:
            frame = generate_day(day, rows_per_day, seed, drift=gradual_shift * index / max(days - 1, 1))
        else:
            frame = generate_day(day, rows_per_day, seed, drifted=index >= days - drift_days)
        paths.append(_write_partition(root, day, frame))
    return paths


def _write_partition(root: pathlib.Path, day: datetime.date, frame: pl.DataFrame) -> pathlib.Path:
    """Write one day as ``day=YYYY-MM-DD/part-0.parquet`` under `root` (the key only in the folder name)."""
    path = root / f"day={day.isoformat()}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(frame.to_arrow(), path, compression="zstd")
    return path


# The context scenario: a fleet observed over time, whose anomalies are only anomalous in context.

CONTEXT_HOSTS = 48
CONTEXT_CADENCE_MINUTES = 10
CONTEXT_SERVICES = ("api", "web", "db")
CONTEXT_SERVICE_SHARE = np.array([0.40, 0.35, 0.25])
CONTEXT_REQUEST_LEVEL = np.array([120.0, 80.0, 40.0])  # requests/s at mean load, before the host's own factor
CONTEXT_LATENCY_BASE = np.array([40.0, 90.0, 15.0])  # ms at mean load, before the host's own factor
CONTEXT_DISK_LEVEL = np.array([5.0, 3.0, 100.0])  # Mbps at mean load, before the host's own factor
AGENT_VERSIONS = ("7.50", "7.51", "7.52")
AGENT_VERSION_GAP_RATE = 0.02  # the monitoring agent sometimes omits its version: an expected null
HOT_HOST_SHARE = 0.15  # hosts whose CPU idles far above the rest of the fleet, always
HOT_HOST_CPU = 35.0
HOT_HOST_TEMPERATURE = 6.0

CONTEXT_ANOMALY_KINDS = ("entity_offset", "wrong_hour", "decoupled", "spike")
CONTEXT_SPIKE_COLUMNS = ("latency_ms", "disk_io_mbps")
INCIDENT_ROWS = (3, 12)  # consecutive readings of one host: 30 minutes to 2 hours at the 10-minute cadence
ENTITY_OFFSET_SIGMAS = (5.0, 6.0)  # how far `entity_offset` moves memory, in units of the host's own spread
NIGHT_HOURS = 5.0  # `wrong_hour` incidents lie within 00:00-05:00 ...
DAYTIME_HOURS = (13.0, 17.0)  # ... with the load of these hours

CONTEXT_SCHEMA = {
    "event_time": pl.Datetime("us"),
    "host_id": pl.String,
    "service": pl.String,
    "agent_version": pl.String,
    "requests_per_s": pl.Float64,
    "cpu_pct": pl.Float64,
    "mem_pct": pl.Float64,
    "latency_ms": pl.Float64,
    "disk_io_mbps": pl.Float64,
    "temperature_c": pl.Float64,
    "label_is_anomaly": pl.Boolean,
    "anomaly_kind": pl.String,
}

_CONTEXT_STREAM = 1  # keeps the context scenario's random streams apart from the telemetry lake's


@dataclass(frozen=True)
class _Hosts:
    """Each host's own normal: its service, agent, levels and spreads (fixed for the whole lake)."""

    host_id: np.ndarray
    service: np.ndarray
    agent_version: np.ndarray
    request_level: np.ndarray
    cpu_idle: np.ndarray
    cpu_span: np.ndarray
    mem_level: np.ndarray
    mem_spread: np.ndarray
    latency_base: np.ndarray
    disk_level: np.ndarray
    temperature_offset: np.ndarray


def _context_hosts(seed: int, count: int) -> _Hosts:
    """Draw `count` hosts whose normals differ by more than any one host varies (some always run hot)."""
    rng = np.random.default_rng([seed, _CONTEXT_STREAM])
    service = rng.choice(len(CONTEXT_SERVICES), size=count, p=CONTEXT_SERVICE_SHARE)
    hot = np.zeros(count, dtype=bool)
    hot[rng.permutation(count)[: round(HOT_HOST_SHARE * count)]] = True
    return _Hosts(
        host_id=np.array([f"host-{index:03d}" for index in range(count)], dtype=object),
        service=np.array(CONTEXT_SERVICES, dtype=object)[service],
        agent_version=np.array(AGENT_VERSIONS, dtype=object)[rng.integers(0, len(AGENT_VERSIONS), count)],
        request_level=CONTEXT_REQUEST_LEVEL[service] * rng.lognormal(0.0, 0.4, count),
        cpu_idle=rng.uniform(5.0, 15.0, count) + HOT_HOST_CPU * hot,
        cpu_span=rng.uniform(20.0, 35.0, count),
        mem_level=rng.uniform(30.0, 80.0, count),
        mem_spread=rng.uniform(1.0, 2.0, count),
        latency_base=CONTEXT_LATENCY_BASE[service] * rng.lognormal(0.0, 0.3, count),
        disk_level=CONTEXT_DISK_LEVEL[service] * rng.lognormal(0.0, 0.3, count),
        temperature_offset=rng.normal(0.0, 2.0, count) + HOT_HOST_TEMPERATURE * hot,
    )


def _context_latency(hosts: _Hosts, host: np.ndarray, load: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Latency follows the host's relative load (0.58x its base at the night trough, 1.42x at the peak)."""
    return hosts.latency_base[host] * (0.3 + 0.7 * load) * noise


def _context_metrics(rng: np.random.Generator, hosts: _Hosts, host: np.ndarray, load: np.ndarray) -> dict:
    """Healthy readings: requests follow the load, CPU, latency and disk follow requests, temperature follows CPU."""
    n = host.size
    requests = hosts.request_level[host] * load * rng.lognormal(0.0, 0.08, n)
    relative_load = requests / hosts.request_level[host]
    cpu = np.clip(hosts.cpu_idle[host] + hosts.cpu_span[host] * relative_load + rng.normal(0.0, 2.0, n), 0.0, 100.0)
    return {
        "requests_per_s": requests,
        "cpu_pct": cpu,
        "mem_pct": hosts.mem_level[host] + hosts.mem_spread[host] * rng.normal(0.0, 1.0, n),
        "latency_ms": _context_latency(hosts, host, relative_load, rng.lognormal(0.0, 0.05, n)),
        "disk_io_mbps": hosts.disk_level[host] * (0.6 + 0.4 * relative_load) * rng.lognormal(0.0, 0.15, n),
        "temperature_c": 24.0 + hosts.temperature_offset[host] + 0.3 * cpu + rng.normal(0.0, 0.8, n),
    }


def _incident_rows(rng: np.random.Generator, hosts: int, readings: int, incidents: dict[str, int]) -> np.ndarray:
    """Label runs of consecutive readings of one host (one incident per host at most) with their kind.

    Rows are ordered reading by reading, host by host within a reading, so host h's reading r is row
    ``r * hosts + h``. `wrong_hour` incidents lie within the night; the others anywhere in the day.
    """
    kinds = [kind for kind, count in incidents.items() for _ in range(count)]
    kind = np.full(hosts * readings, None, dtype=object)
    night_readings = int(NIGHT_HOURS * 60 / CONTEXT_CADENCE_MINUTES)
    lengths = rng.integers(INCIDENT_ROWS[0], INCIDENT_ROWS[1] + 1, size=len(kinds))
    for incident_kind, host, length in zip(kinds, rng.permutation(hosts)[: len(kinds)], lengths):
        window = night_readings if incident_kind == "wrong_hour" else readings
        first = rng.integers(0, window - length + 1)
        kind[(first + np.arange(length)) * hosts + host] = incident_kind
    return kind


def _shift_memory_within_fleet(
    rng: np.random.Generator, metrics: dict, rows: np.ndarray, hosts: _Hosts, host: np.ndarray
) -> None:
    """`entity_offset`: move each incident's memory 5-6 of its host's own spreads toward the fleet's median, so
    the value is far from the host's normal but ordinary for the fleet."""
    toward_median = np.sign(np.median(hosts.mem_level) - hosts.mem_level[host[rows]])
    incident_host, per_row = np.unique(host[rows], return_inverse=True)
    sigmas = rng.uniform(*ENTITY_OFFSET_SIGMAS, size=incident_host.size)[per_row]
    metrics["mem_pct"][rows] += toward_median * sigmas * hosts.mem_spread[host[rows]]


def generate_context_day(
    day: datetime.date, seed: int, incidents: dict[str, int], hosts: int = CONTEXT_HOSTS
) -> pl.DataFrame:
    """One day of a fleet's readings, every host every 10 minutes, with `incidents[kind]` labelled incidents.

    Anomalies are consistent readings in the wrong context: `entity_offset` (memory 5-6 of the host's own spreads
    away from its normal, within the fleet's range), `wrong_hour` (the host's afternoon load, with everything
    that follows from it, at night), `decoupled` (CPU follows requests but latency follows the opposite end of
    the day's load) and, as a control that needs no context, `spike` (latency or disk 5-20x). The day's random
    stream is seeded from ``(seed, day)`` and the fleet from `seed`, so a day can be regenerated on its own.
    """
    fleet = _context_hosts(seed, hosts)
    rng = np.random.default_rng([seed, day.toordinal(), _CONTEXT_STREAM])
    readings = 24 * 60 // CONTEXT_CADENCE_MINUTES
    host = np.tile(np.arange(hosts), readings)
    # Host h reports h seconds after each 10-minute mark, so rows in this order are sorted by time.
    offsets = np.repeat(np.arange(readings), hosts) * CONTEXT_CADENCE_MINUTES * 60_000_000 + host * 1_000_000
    load = _relative_load(offsets / _MICROS_PER_HOUR)

    kind = _incident_rows(rng, hosts, readings, incidents)
    wrong_hour = np.flatnonzero(kind == "wrong_hour")
    load[wrong_hour] = _relative_load(rng.uniform(*DAYTIME_HOURS, size=wrong_hour.size))
    metrics = _context_metrics(rng, fleet, host, load)

    decoupled = np.flatnonzero(kind == "decoupled")
    opposite_load = np.where(load[decoupled] >= 1.0, _relative_load(3.0), _relative_load(15.0))
    noise = rng.lognormal(0.0, 0.05, decoupled.size)
    metrics["latency_ms"][decoupled] = _context_latency(fleet, host[decoupled], opposite_load, noise)
    _shift_memory_within_fleet(rng, metrics, np.flatnonzero(kind == "entity_offset"), fleet, host)
    _inject_spikes(rng, metrics, np.flatnonzero(kind == "spike"), CONTEXT_SPIKE_COLUMNS)

    is_labelled = np.array([name is not None for name in kind])
    _sensor_gaps(rng, metrics, is_labelled)
    agent_version = fleet.agent_version[host].copy()
    agent_version[~is_labelled & (rng.random(host.size) < AGENT_VERSION_GAP_RATE)] = None

    return pl.DataFrame(
        {
            "event_time": np.datetime64(day, "us") + offsets.astype("timedelta64[us]"),
            "host_id": fleet.host_id[host].tolist(),
            "service": fleet.service[host].tolist(),
            "agent_version": agent_version.tolist(),
            **{name: np.round(values, 2) for name, values in metrics.items()},
            "label_is_anomaly": is_labelled,
            "anomaly_kind": kind.tolist(),
        },
        schema=CONTEXT_SCHEMA,
    ).with_columns([pl.col(name).fill_nan(None) for name in metrics])


def generate_context_lake(
    output_dir: str | os.PathLike,
    days: int = 10,
    seed: int = 0,
    start: datetime.date = datetime.date(2026, 11, 1),
    clean_days: int = 7,
    incidents_per_kind: int = 6,
    hosts: int = CONTEXT_HOSTS,
) -> list[pathlib.Path]:
    """Write the context scenario's ``days`` Hive partitions and return their paths.

    The first `clean_days` days (the ones to train on) hold one incident each, of each kind in turn: a small,
    natural contamination. Every later day holds `incidents_per_kind` incidents of every kind. Files are
    overwritten and byte-for-byte reproducible for the same arguments.
    """
    root = pathlib.Path(output_dir)
    paths = []
    for index in range(days):
        day = start + datetime.timedelta(days=index)
        if index < clean_days:
            incidents = {CONTEXT_ANOMALY_KINDS[index % len(CONTEXT_ANOMALY_KINDS)]: 1}
        else:
            incidents = dict.fromkeys(CONTEXT_ANOMALY_KINDS, incidents_per_kind)
        paths.append(_write_partition(root, day, generate_context_day(day, seed, incidents, hosts)))
    return paths
