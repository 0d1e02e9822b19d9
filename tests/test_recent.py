"""The bounded map of what a process keeps between partitions."""

from __future__ import annotations

from sae_pipeline.recent import RecentlyUsed


def test_keeps_the_most_recently_used_entries():
    cache: RecentlyUsed[str, int] = RecentlyUsed(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent: "b" goes first
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    cache.pop("a")
    cache.pop("absent")
    assert "a" not in cache and cache.get("missing") is None
