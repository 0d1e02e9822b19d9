"""Reading ahead on a background thread: what scoring relies on when it reads a partition's batches."""

from __future__ import annotations

import threading

import pytest

from sae_pipeline.overlap import Prefetched


def test_the_first_item_is_read_before_iteration_starts():
    """A partition's first batch is read while its model loads, before anything asks for it."""
    first_read = threading.Event()

    def batches():
        first_read.set()
        yield from range(5)

    with Prefetched(batches()) as prefetched:
        assert first_read.wait(timeout=10)
        assert list(prefetched) == [0, 1, 2, 3, 4]


def test_a_read_error_surfaces_where_its_item_is_taken():
    def batches():
        yield "first"
        raise OSError("corrupt file part-1.parquet")

    taken = []

    def take_all():
        with Prefetched(batches()) as prefetched:
            for item in prefetched:
                taken.append(item)

    with pytest.raises(OSError, match="part-1.parquet"):
        take_all()
    assert taken == ["first"]


def test_leaving_early_reads_no_further_than_one_item_ahead():
    produced = []

    def batches():
        for number in range(100):
            produced.append(number)
            yield number

    with Prefetched(batches()) as prefetched:
        for number in prefetched:
            if number == 2:
                break
    assert produced[:3] == [0, 1, 2] and len(produced) <= 4  # at most the item after the last one taken
