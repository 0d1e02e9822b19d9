"""Partition keys of Delta and Iceberg tables held to the rules of Hive folders, so every format plans alike.

The table declares its partition columns; the config declares `lake.partition_keys` (names in order, with types)
as for Parquet folders. They must agree, so that a partition's name (`day=2026-11-01`, what the outputs and the
ledger are keyed by) and the checks on its values (`hive.partition_error`) are the same on every format.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, unquote

from sae_pipeline import hive
from sae_pipeline.config import LakeConfig
from sae_pipeline.records import PartitionRecord
from sae_pipeline.storage import LakeReadError, join_uri

logger = logging.getLogger(__name__)


def check_table_keys(lake: LakeConfig, table_keys: list[str], key_types: dict[str, str]) -> None:
    """Raise a `LakeReadError` when the table is not partitioned or `lake.partition_keys` names other keys;
    `key_types` are the types the table suggests for each key (`date`, `int`, `string`)."""
    if not table_keys:
        raise LakeReadError(
            f"{lake.location} has no partition columns: the pipeline reads, scores and tracks a table partition by "
            "partition (rule: lake.partition_keys)"
        )
    if list(lake.partition_keys) != table_keys:
        declared = ", ".join(f"{key}: {key_types[key]}" for key in table_keys)
        raise LakeReadError(
            f"{lake.location} is partitioned by {table_keys}, but lake.partition_keys names "
            f"{list(lake.partition_keys)}: set lake.partition_keys to {{{declared}}}"
        )


def partition_name(values: dict[str, str]) -> str:
    """The Hive-style name of a partition (`day=2026-11-01/region=us%20east`)."""
    return "/".join(f"{key}={quote(value, safe='-_.:~')}" for key, value in values.items())


def partition_values(name: str) -> dict[str, str]:
    """The decoded key values of a partition name (the inverse of `partition_name`)."""
    return {key: unquote(value) for key, _, value in (part.partition("=") for part in name.split("/"))}


def table_partition_record(
    lake: LakeConfig, location: str, values: dict[str, str], files: list[str], fingerprint: str, version: int
) -> PartitionRecord:
    """The record of one partition of a table at `version`; refused (with an `error`, and nothing to read) when
    its key values break the partition-key rules."""
    name = partition_name(values)
    found = {"name": name, "uri": join_uri(location, name), "values": values, "version": version}
    partition = hive.Partition(values=tuple(values.items()), name=name, uri=found["uri"])
    error = hive.partition_error(partition, dict(lake.partition_keys))
    if error is not None:
        logger.warning("%s", error)
        return PartitionRecord(**found, error=error.replace("partition folder", "partition", 1))
    return PartitionRecord(**found, files=files, fingerprint=fingerprint)


def chain_previous(records: list[PartitionRecord]) -> list[PartitionRecord]:
    """`records` (in key order) with each usable one's `previous_uri`: the usable partition before it, where context
    history continues from (as `hive.partition_records` links Parquet folders)."""
    linked, previous = [], None
    for record in records:
        if record.refused:
            linked.append(record)
            continue
        linked.append(record.model_copy(update={"previous_uri": previous}))
        previous = record.uri
    return linked
