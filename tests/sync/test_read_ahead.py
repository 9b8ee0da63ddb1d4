"""`footage.read_ahead`: chunks made in a thread of their own, ahead of the
caller, never more than `depth` of them, and nothing left running."""

from __future__ import annotations

import threading
import time

import pytest

from sync.domain.footage import read_ahead


def test_items_come_in_order_and_an_error_comes_after_the_items_before_it():
    def pieces():
        yield from (b"a", b"b", b"c")
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for piece in read_ahead(pieces()):
            got.append(piece)
    assert got == [b"a", b"b", b"c"]


def test_it_runs_at_most_depth_items_ahead_and_stops_when_the_reader_stops():
    made = []

    def pieces():
        for index in range(1000):
            made.append(index)
            yield index

    stream = read_ahead(pieces(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # time for the producer to run as far ahead as it may (a slow one stays below the bound)
    # One handed over, two waiting in the queue, one made and waiting to be queued.
    assert len(made) <= 4
    stream.close()  # a viewer who stops watching
    assert not any(t.name == "footage-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(made) <= 5
