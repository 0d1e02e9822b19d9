"""Apache Iceberg tables through pyiceberg: the partitions of one snapshot, planned from its manifests alone.

The catalog named in the config (`lake.catalog`) resolves `lake.table` to its metadata; a snapshot's manifests list
its live data files with their partition values, sizes and row counts, and the delete files that apply to each, so
a partition's fingerprint (a digest of those) changes with every append, overwrite or delete that touches it, and
planning reads no data file. Partition keys are the spec's partition fields: identity fields, and `day` / `hour`
transforms of a timestamp (`event_time_day=2026-11-01`, `event_time_hour=2026-11-01-05`, Iceberg's own spelling).
Rows are read through pyiceberg's Arrow reader, which applies delete files and maps columns by field id (renamed
and added columns read like in any Iceberg engine); identity-partition columns are dropped, as Hive readers drop
folder keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterator

import pyarrow as pa

from sae_pipeline.config import CatalogConfig, LakeConfig
from sae_pipeline.hive import HIVE_DEFAULT_PARTITION
from sae_pipeline.records import PartitionRecord
from sae_pipeline.storage import LakeReadError
from sae_pipeline.tables.keys import chain_previous, check_table_keys, partition_values, table_partition_record

EPOCH = dt.datetime(1970, 1, 1)


def _key_text(transform: str, source_type: str, value: object) -> str | None:
    """A partition value as text: dates as YYYY-MM-DD, hours as YYYY-MM-DD-HH (Iceberg's human form)."""
    if value is None:
        return None
    if transform == "day" or (transform == "identity" and source_type == "date"):
        return (value if isinstance(value, dt.date) else dt.date(1970, 1, 1) + dt.timedelta(days=value)).isoformat()
    if transform == "hour":
        return (EPOCH + dt.timedelta(hours=value)).strftime("%Y-%m-%d-%H")
    return str(value)


def catalog_properties(settings: CatalogConfig) -> dict[str, str]:
    """What `load_catalog` takes: the configured properties, and the S3 endpoint of the AWS environment unless they
    set one (pyiceberg's file IO would otherwise go to AWS, where pyarrow, boto3 and delta-rs follow the
    environment)."""
    properties = settings.load_properties()
    if "s3.endpoint" not in properties and os.environ.get("AWS_ENDPOINT_URL"):
        properties["s3.endpoint"] = os.environ["AWS_ENDPOINT_URL"]
    return properties


class IcebergSource:
    """An Iceberg table's partitions at one snapshot, through the configured catalog."""

    def __init__(self, lake: LakeConfig):
        self.lake = lake

    def _table(self):
        from pyiceberg.catalog import load_catalog
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        settings = self.lake.iceberg_catalog
        where = f"Iceberg catalog {settings.name!r} ({settings.type}{' at ' + settings.uri if settings.uri else ''})"
        try:
            catalog = load_catalog(settings.name, **catalog_properties(settings))
            return catalog.load_table(self.lake.table)
        except (NoSuchTableError, NoSuchNamespaceError):
            raise LakeReadError(f"no Iceberg table {self.lake.table} in {where}") from None
        except Exception as error:  # drivers raise their own types (sqlalchemy, requests, boto3)
            message = " ".join(str(error).split())[:300]
            raise LakeReadError(f"cannot reach {where}: {type(error).__name__}: {message}") from error

    def _snapshot_id(self, table, as_of: int | None) -> int:
        snapshot = table.snapshot_by_id(as_of) if as_of is not None else table.current_snapshot()
        if snapshot is None:
            if as_of is not None:
                known = ", ".join(str(s.snapshot_id) for s in table.snapshots()[-5:])
                raise LakeReadError(f"--as-of {as_of}: Iceberg table {self.lake.table} has no such snapshot ({known})")
            raise LakeReadError(f"Iceberg table {self.lake.table} has no snapshot (no data written yet)")
        return snapshot.snapshot_id

    def _keys(self, table) -> list[tuple[str, str, str, str]]:
        """(key name, transform, source column, source type) of each field of the table's partition spec."""
        schema = table.schema()
        keys = []
        for field in table.spec().fields:
            transform = str(field.transform).split("[")[0].lower()
            source = schema.find_field(field.source_id)
            if transform not in ("identity", "day", "hour"):
                raise LakeReadError(
                    f"Iceberg table {self.lake.table}: partition field {field.name} uses the {field.transform} "
                    "transform (rule: partition fields must be identity, day or hour)"
                )
            keys.append((field.name, transform, source.name, str(source.field_type)))
        return keys

    def partition_records(self, as_of: int | None = None) -> list[PartitionRecord]:
        table = self._table()
        snapshot_id = self._snapshot_id(table, as_of)
        keys = self._keys(table)
        suggested = {
            name: "date" if transform == "day" or source_type == "date" else "int" if "int" in source_type else "string"
            for name, transform, _, source_type in keys
        }
        if transform_hours := [name for name, transform, _, _ in keys if transform == "hour"]:
            suggested.update(dict.fromkeys(transform_hours, "string"))
        check_table_keys(self.lake, [name for name, *_ in keys], suggested)
        found = self._planned(table, snapshot_id, keys)
        if not found:
            raise LakeReadError(f"Iceberg table {self.lake.table} has no data files at snapshot {snapshot_id}")
        records = []
        for values, tasks in sorted(found.items()):
            listing = sorted(
                f"{task.file.file_path}:{task.file.file_size_in_bytes}:{task.file.record_count}:"
                + ",".join(sorted(delete.file_path for delete in task.delete_files))
                for task in tasks
            )
            records.append(
                table_partition_record(
                    self.lake,
                    table.location(),
                    dict(zip([name for name, *_ in keys], values)),
                    files=sorted(task.file.file_path for task in tasks),
                    fingerprint=hashlib.sha256("\n".join(listing).encode()).hexdigest()[:32],
                    version=snapshot_id,
                )
            )
        return chain_previous(records)

    @staticmethod
    def _planned(table, snapshot_id: int, keys: list[tuple[str, str, str, str]]) -> dict[tuple[str, ...], list]:
        """The snapshot's file scan tasks (data files with their delete files) by partition values, from its
        manifests."""
        found: dict[tuple[str, ...], list] = defaultdict(list)
        for task in table.scan(snapshot_id=snapshot_id).plan_files():
            partition = task.file.partition
            values = tuple(
                HIVE_DEFAULT_PARTITION if (text := _key_text(transform, kind, partition[i])) is None else text
                for i, (_, transform, _, kind) in enumerate(keys)
            )
            found[values].append(task)
        return found

    def _tasks(self, partition: PartitionRecord):
        """(table, scan, the partition's file scan tasks) at the snapshot the record was planned at."""
        table = self._table()
        scan = table.scan(snapshot_id=partition.version)
        files = set(partition.files or ())
        return table, scan, [task for task in scan.plan_files() if task.file.file_path in files]

    def iter_batches(self, partition: PartitionRecord, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        table, scan, tasks = self._tasks(partition)
        return self._read(table, scan, tasks, batch_rows)

    def iter_previous_batches(
        self, partition: PartitionRecord, batch_rows: int
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        if partition.previous_uri is None:
            return iter(())
        table = self._table()
        values = tuple(
            partition_values(partition.previous_uri.removeprefix(table.location().rstrip("/") + "/")).values()
        )
        tasks = self._planned(table, partition.version, self._keys(table)).get(values, [])
        return self._read(table, table.scan(snapshot_id=partition.version), tasks, batch_rows)

    def _read(self, table, scan, tasks: list, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Rows of some file scan tasks through pyiceberg's Arrow reader, without identity-partition columns."""
        from pyiceberg.io.pyarrow import ArrowScan

        dropped = {source for _, transform, source, _ in self._keys(table) if transform == "identity"}
        reader = ArrowScan(table.metadata, table.io, scan.projection(), scan.row_filter)
        for task in tasks:
            batches = iter(reader.to_record_batches([task]))
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (OSError, pa.ArrowException) as error:
                    raise LakeReadError(f"cannot read Iceberg data file {task.file.file_path}: {error}") from error
                kept = batch.drop_columns([name for name in batch.schema.names if name in dropped])
                for start in range(0, kept.num_rows, batch_rows):
                    yield task.file.file_path, kept.slice(start, batch_rows)

    def count_rows(self, partition: PartitionRecord) -> int:
        """Rows of the partition's data files from the manifests (rows removed by delete files still count)."""
        return sum(task.file.record_count for task in self._tasks(partition)[2])

    def read_schema(self, partition: PartitionRecord) -> tuple[str, pa.Schema] | None:
        table = self._table()
        dropped = {source for _, transform, source, _ in self._keys(table) if transform == "identity"}
        schema = table.schema().as_arrow()
        return self.lake.location, pa.schema([field for field in schema if field.name not in dropped])
