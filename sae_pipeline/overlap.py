"""Overlapping storage I/O with scoring: reading the next batch and writing the last one on background threads.

Parquet decoding, encoding and compression run in Arrow's C++ code without the GIL, as does torch, so on a
machine with two cores a partition is scored while its next batch is read and its previous batch is written.
At most one batch waits in each direction, so memory stays bounded by the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

import pyarrow as pa

Item = TypeVar("Item")
_END = object()


class Prefetched(Generic[Item]):
    """Iterate `items` while the next one is produced on a background thread, the first one from construction on:
    a partition's first batch is read while its model loads. Errors surface where the item is taken. Use it as a
    context manager: leaving waits for the read in flight and drops the rest.
    """

    def __init__(self, items: Iterator[Item]):
        self._items = items
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._pending = self._pool.submit(next, items, _END)

    def __iter__(self) -> Iterator[Item]:
        while (item := self._pending.result()) is not _END:
            self._pending = self._pool.submit(next, self._items, _END)
            yield item

    def __enter__(self) -> Prefetched[Item]:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class TableWriter(Protocol):
    def write(self, table: pa.Table) -> None: ...
    def commit(self) -> str: ...
    def abort(self) -> None: ...


class BackgroundWriter:
    """Wrap a `TableWriter` so that `write` returns at once and the table is written on a background thread.

    A write waits for the previous one first, so one table at most is in flight; its error surfaces on the next
    `write` or on `commit`. `abort` waits for the write in flight and then drops everything.
    """

    def __init__(self, writer: TableWriter):
        self.writer = writer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self._in_flight: Future | None = None

    def write(self, table: pa.Table) -> None:
        self._wait()
        self._in_flight = self._pool.submit(self.writer.write, table)

    def commit(self) -> str:
        try:
            self._wait()
            return self.writer.commit()
        finally:
            self._pool.shutdown()

    def abort(self) -> None:
        try:
            self._wait()
        except Exception:  # the write that failed is being dropped anyway
            pass
        finally:
            self._pool.shutdown()
            self.writer.abort()

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()
