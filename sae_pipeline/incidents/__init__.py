"""Incidents: flagged rows grouped per entity and time, reviewed by people, fed back into training.

- `flagged`: each scored partition's flagged rows with stable row keys (`keys`), the table incidents are built from.
- `build`: the grouping into incidents and the `incidents` table; `reviews`: the append-only review table and what
  verdicts change; `contract`: the columns of these tables; `commands`: `sae-pipeline review`.
- `page`: `anomalies.html`, the incidents and their top rows as pages (per partition, and over the lake).
- `labels`: incidents in labelled rows and how many an alert budget surfaces (benchmarks only).
"""

from sae_pipeline.incidents.build import build_incidents, read_incidents, write_incidents
from sae_pipeline.incidents.labels import alerts_at_budget, incidents_surfaced, label_incidents, share_surfaced
from sae_pipeline.incidents.page import write_anomaly_pages

__all__ = [
    "alerts_at_budget",
    "build_incidents",
    "incidents_surfaced",
    "label_incidents",
    "read_incidents",
    "share_surfaced",
    "write_anomaly_pages",
    "write_incidents",
]
