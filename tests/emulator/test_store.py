"""The store: (time, seq) order under inserts, keyset positions, scheduled visibility."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from strongdm import activities_pb2, queries_pb2

from auditstream.emulator import QueriesTime
from auditstream.emulator.store import Row, Store

NANOS = 1_000_000_000


def row(key: str, t: int) -> Row:
    return Row(b"", key, t)


def test_inserts_keep_time_then_visibility_order() -> None:
    store = Store()
    store.load("activities", [row("b", 20), row("a", 10), row("c", 20)])
    store.add("activities", row("d", 20))
    store.add("activities", row("e", 15))
    stream = store.stream("activities")
    assert list(stream.times) == [10, 15, 20, 20, 20]
    assert list(stream.seqs) == [1, 5, 2, 3, 4]  # load sorts by time; ties keep insertion order
    assert stream.keys == ["a", "e", "b", "c", "d"]
    assert stream.index_after(20, 2) == 3 and stream.index_before(20, 2) == 2  # around "b"
    assert stream.index_after(15, 0) == 1 and stream.index_range(11, 20) == (1, 5)


def test_duplicate_keys_and_wrong_types_are_refused() -> None:
    store = Store()
    store.add("activities", row("a", 1))
    with pytest.raises(ValueError, match="already stored"):
        store.add("activities", row("a", 2))
    with pytest.raises(TypeError):
        store.insert("activities", queries_pb2.Query(id="q"))
    with pytest.raises(ValueError, match="timezone-aware"):
        store.insert("activities", activities_pb2.Activity(id="x"), visible_at=dt.datetime(2030, 1, 1))
    with pytest.raises(KeyError):
        store.truth("no_such_stream")


def test_scheduled_rows_get_their_seq_when_published_in_visibility_order() -> None:
    store = Store()
    now = time.time_ns()
    store.add("activities", row("late", 5), visible_at_ns=now + 2 * NANOS)
    store.add("activities", row("soon", 7), visible_at_ns=now + 1 * NANOS)
    store.add("activities", row("now", 9))
    assert store.seq == 1 and store.pending_count() == 2 and store.next_pending_at() == now + NANOS
    assert store.publish_due(now + int(1.5 * NANOS)) == 1
    assert store.publish_due(now + 3 * NANOS) == 1
    stream = store.stream("activities")
    assert dict(zip(stream.keys, stream.seqs, strict=True)) == {"late": 3, "soon": 2, "now": 1}


@pytest.mark.parametrize(("mode", "expected"), [(QueriesTime.START, 100), (QueriesTime.COMPLETED, 500)])
def test_queries_filter_time_follows_the_mode(mode: QueriesTime, expected: int) -> None:
    store = Store(mode)
    query = queries_pb2.Query(id="q")
    query.timestamp.FromNanoseconds(100)
    query.completed_at.FromNanoseconds(500)
    store.insert("queries", query)
    open_query = queries_pb2.Query(id="q")
    open_query.timestamp.FromNanoseconds(100)
    store.insert("queries", open_query)
    assert dict(store.filter_truth("queries")) == {"q": expected, "q:start": 100}
    assert dict(store.truth("queries")) == {"q": 100, "q:start": 100}
