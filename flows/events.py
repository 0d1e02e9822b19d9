"""Prefect events from the library's event records (`sae_pipeline.alerts`): emitted, then flushed to the API.

Emitting never fails a run: an event that cannot be sent is logged (the scores are committed either way).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from sae_pipeline.alerts import EventRecord

logger = logging.getLogger(__name__)

#: Seconds to wait for queued events to reach the API at the end of a run.
FLUSH_TIMEOUT_S = 10.0


def emit(records: Sequence[EventRecord], flush: bool = True) -> int:
    """Emit each record as a Prefect event (`prefect.events.emit_event`) and, with `flush`, wait until they are
    sent; return how many were handed to Prefect."""
    if not records:
        return 0
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    sent = 0
    for record in records:
        try:
            event = emit_event(
                event=record.event,
                resource={
                    "prefect.resource.id": record.resource_id,
                    "prefect.resource.name": record.resource_name,
                    **record.labels,
                },
                payload=record.payload,
            )
        except Exception as error:  # an event is never worth a failed run
            logger.warning("event %s for %s not emitted: %s", record.event, record.resource_id, error)
            continue
        sent += event is not None
    if flush and sent:
        try:
            EventsWorker.drain_all(timeout=FLUSH_TIMEOUT_S)
        except Exception as error:
            logger.warning("events may not all have reached the Prefect API: %s", error)
    return sent


def emit_outside_a_run(records: Sequence[EventRecord]) -> int:
    """Emit events from a command that runs no flow (`models promote`, `models rollback`): only when
    `PREFECT_API_URL` names a server that can receive them (else there is no one to tell)."""
    from prefect.settings import PREFECT_API_URL

    if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
        return 0
    return emit(records)
