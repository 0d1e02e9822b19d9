"""`RecentlyUsed`: a small thread-safe map that keeps its most recently used entries.

What a process keeps between partitions (loaded model versions, their kNN indexes) is bounded this way: a worker
scores with one or a few models at a time, and entries it stopped using are dropped instead of piling up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class RecentlyUsed(Generic[Key, Value]):
    """At most `size` entries; reading or writing an entry makes it the most recent, and the least recent goes
    first. Safe to share between threads (two threads missing the same key may both build its value)."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Key, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Value | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Key, value: Value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def pop(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._entries
