"""The flows as deployments run them: the same flows with a time limit and, for scoring, one retry.

`deployments/prefect.yaml` points its entrypoints here; the CLI and tests call the plain flows in `lake_pipeline`.
A retry helps a scoring run that met another run's lease or a storage outage; bad data or config fails again fast.
"""

from __future__ import annotations

from flows.lake_pipeline import lake_pipeline, score_flow, train_or_update_flow

score = score_flow.with_options(timeout_seconds=2 * 3600, retries=1, retry_delay_seconds=300)
train_or_update = train_or_update_flow.with_options(timeout_seconds=6 * 3600)
sample = lake_pipeline.with_options(timeout_seconds=3600)
