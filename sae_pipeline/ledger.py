"""The ledger: what has been scored, from which input files, by which model — the memory that makes reruns cheap.

One small JSON document per input partition, `ledger/<partition>.json` on the output storage (local or S3), written
as the *last* step of scoring that partition: its presence is the commit. A partition whose scoring crashed has no
new entry and is simply redone by the next run (every output write replaces the partition, so redoing is safe).
One document per partition means parallel partition tasks never read-modify-write a shared file.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import BaseModel, ConfigDict

from sae_pipeline import storage

logger = logging.getLogger(__name__)

LEDGER_FORMAT_VERSION = 1
_SUFFIX = ".json"


class LedgerEntry(BaseModel):
    """The record of one committed partition (the ledger contract, documented in the README)."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = LEDGER_FORMAT_VERSION
    partition: str
    fingerprint: str
    model_version: str
    rows_in: int
    rows_quarantined: int
    rows_scored: int
    rows_flagged: int
    outputs: dict[str, str]
    run_id: str
    reason: str
    committed_at: dt.datetime
    #: The Delta table version or Iceberg snapshot id the partition was read at (None for Parquet folders).
    table_version: int | None = None


class Ledger:
    """Reads and writes the per-partition entries under `ledger_uri`."""

    def __init__(self, ledger_uri: str):
        self.ledger_uri = ledger_uri

    def _entry_uri(self, partition: str) -> str:
        return storage.join_uri(self.ledger_uri, partition + _SUFFIX)

    def entries(self) -> dict[str, LedgerEntry]:
        """Every committed entry, by partition name. An unreadable entry counts as not committed (the partition
        is scored again, which is always safe) and is logged."""
        found = {}
        for uri in storage.list_files(self.ledger_uri, _SUFFIX):
            try:
                entry = LedgerEntry.model_validate(storage.read_json(uri))
            except (ValueError, storage.LakeReadError) as error:
                logger.warning(
                    "ignoring unreadable ledger entry %s (its partition will be scored again): %s", uri, error
                )
                continue
            found[entry.partition] = entry
        return found

    def commit(self, entry: LedgerEntry) -> None:
        storage.write_json(self._entry_uri(entry.partition), entry.model_dump(mode="json"))

    def remove(self, partition: str) -> None:
        storage.delete_file(self._entry_uri(partition))
