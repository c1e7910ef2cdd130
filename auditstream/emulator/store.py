"""The emulator's ground truth: every record of every stream, indexed by filter time.

Memory matters (1,000,000 records within ~1 KB each), so a stream keeps the serialized
record bytes plus compact parallel arrays sorted by ``(filter time, seq)``:

* ``times``: the time the ``after:``/``before:`` filter compares (``completed_at`` for
  activities, ``timestamp`` for history, either for queries depending on ``queries_time``);
* ``seqs``: the visibility sequence number, global across streams and strictly increasing
  in the order records become visible. A listing remembers the highest seq visible when
  its first page was served, which makes pagination exact despite inserts;
* ``record_times``: the registry's time (``StreamSpec.time_field``), reported by ``truth``.

Records due to appear later (``visible_at`` in the future: completions of long-running
sessions, records a test schedules) wait in a heap and get their seq only when published,
so seq order always equals visibility order. Publishing is lazy: every read publishes
what is due first, which keeps the store free of timers.

All methods take one lock, because tests call ``insert``/``truth`` from another thread
than the server's event loop.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from auditstream.emulator.options import QueriesTime
from auditstream.sdm.registry import ALL_STREAM_NAMES, STREAMS, StreamKind, StreamSpec


class Row(NamedTuple):
    """One record as the generator hands it over (no protobuf parsing needed to index it)."""

    payload: bytes  # the record, serialized with the SDK's message class
    key: str  # registry.StreamSpec.record_key() of the record
    time_ns: int  # registry time field
    completed_ns: int = 0  # queries: completed_at, 0 for an open start record


class TruthEntry(NamedTuple):
    stream: str
    key: str
    time_ns: int


def row_from_record(spec: StreamSpec, record: Any) -> Row:
    """Index a protobuf record given by a test, exactly as generated rows are indexed."""
    if not isinstance(record, spec.record_class):
        raise TypeError(f"{spec.name} stores {spec.record_class.__name__}, not {type(record).__name__}")
    completed = 0
    if spec.kind is StreamKind.QUERY:
        completed = record.completed_at.seconds * 1_000_000_000 + record.completed_at.nanos
    return Row(record.SerializeToString(), spec.record_key(record), spec.record_time_ns(record), completed)


class StreamStore:
    """The records of one stream, sorted by ``(filter time, seq)``."""

    def __init__(self, spec: StreamSpec, queries_time: QueriesTime) -> None:
        self.spec = spec
        self._by_completion = spec.kind is StreamKind.QUERY and queries_time is QueriesTime.COMPLETED
        self.times = array("q")
        self.seqs = array("q")
        self.record_times = array("q")
        self.payloads: list[bytes] = []
        self.keys: list[str] = []
        self._key_set: set[str] = set()

    def __len__(self) -> int:
        return len(self.times)

    def filter_time(self, row: Row) -> int:
        if self._by_completion and row.completed_ns:
            return row.completed_ns
        return row.time_ns

    def add(self, row: Row, seq: int) -> None:
        """Insert keeping the sort; ``seq`` is the global maximum, so it goes last among ties.

        New records land near the end (live, late by minutes), so the array shift is short.
        """
        if row.key in self._key_set:
            raise ValueError(f"{self.spec.name}: a record with key {row.key!r} is already stored")
        when = self.filter_time(row)
        at = bisect.bisect_right(self.times, when)
        self.times.insert(at, when)
        self.seqs.insert(at, seq)
        self.record_times.insert(at, row.time_ns)
        self.payloads.insert(at, row.payload)
        self.keys.insert(at, row.key)
        self._key_set.add(row.key)

    def append(self, row: Row, seq: int) -> None:
        """Bulk-load path: the caller appends rows already sorted by filter time."""
        if row.key in self._key_set:
            raise ValueError(f"{self.spec.name}: a record with key {row.key!r} is already stored")
        when = self.filter_time(row)
        if self.times and when < self.times[-1]:
            raise ValueError("append() needs rows sorted by filter time")
        self.times.append(when)
        self.seqs.append(seq)
        self.record_times.append(row.time_ns)
        self.payloads.append(row.payload)
        self.keys.append(row.key)
        self._key_set.add(row.key)

    def index_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Half-open index range of the records whose filter time is within ``[lo, hi]``."""
        return bisect.bisect_left(self.times, lo), bisect.bisect_right(self.times, hi)

    def index_after(self, time_ns: int, seq: int) -> int:
        """First index whose ``(time, seq)`` is greater than the given position."""
        start, end = bisect.bisect_left(self.times, time_ns), bisect.bisect_right(self.times, time_ns)
        return bisect.bisect_right(self.seqs, seq, start, end)

    def index_before(self, time_ns: int, seq: int) -> int:
        """One past the last index whose ``(time, seq)`` is lower than the given position."""
        start, end = bisect.bisect_left(self.times, time_ns), bisect.bisect_right(self.times, time_ns)
        return bisect.bisect_left(self.seqs, seq, start, end)

    def has_key(self, key: str) -> bool:
        return key in self._key_set

    def key_set(self) -> set[str]:
        return set(self._key_set)


class Store:
    """All streams, the global visibility sequence and the records not yet visible."""

    def __init__(self, queries_time: QueriesTime = QueriesTime.COMPLETED) -> None:
        self.lock = threading.RLock()
        # Every registry stream, so truth() answers for each; ``replays`` stays empty: the API
        # serves it through Queries and Replays.List, from no store of its own.
        self.streams: dict[str, StreamStore] = {
            name: StreamStore(STREAMS[name], queries_time) for name in ALL_STREAM_NAMES
        }
        self._seq = 0
        self._pending: list[tuple[int, int, str, Row]] = []
        self._pending_order = itertools.count()

    @property
    def seq(self) -> int:
        """The highest visibility sequence number handed out so far."""
        return self._seq

    def stream(self, name: str) -> StreamStore:
        try:
            return self.streams[name]
        except KeyError:
            raise KeyError(f"unknown stream {name!r}") from None

    # --- writing -----------------------------------------------------------------------

    def load(self, name: str, rows: Iterable[Row]) -> int:
        """Bulk-load rows (any order) as visible now; returns how many were added.

        Sorting once and appending is much faster than inserting 1,000,000 rows one by one.
        """
        stream = self.stream(name)
        ordered = sorted(rows, key=stream.filter_time)
        with self.lock:
            put = stream.append if not len(stream) else stream.add
            for row in ordered:
                self._seq += 1
                put(row, self._seq)
        return len(ordered)

    def add(self, name: str, row: Row, visible_at_ns: int | None = None) -> None:
        """Make a row visible now, or schedule it for ``visible_at_ns`` (wall clock)."""
        self.stream(name)  # validate the name before anything is queued
        with self.lock:
            if visible_at_ns is not None and visible_at_ns > time.time_ns():
                heapq.heappush(self._pending, (visible_at_ns, next(self._pending_order), name, row))
                return
            self._seq += 1
            self.streams[name].add(row, self._seq)

    def insert(self, name: str, record: Any, visible_at: dt.datetime | int | None = None) -> str:
        """Add one SDK protobuf record (for tests); returns its registry key.

        ``visible_at`` (an aware datetime, or nanoseconds since the epoch) delays when the
        record starts being listed, whatever its own timestamp says.
        """
        row = row_from_record(self.stream(name).spec, record)
        at: int | None
        if isinstance(visible_at, dt.datetime):
            if visible_at.tzinfo is None:
                raise ValueError("visible_at must be timezone-aware")
            at = int(visible_at.timestamp()) * 1_000_000_000 + visible_at.microsecond * 1_000
        else:
            at = visible_at
        self.add(name, row, at)
        return row.key

    def publish_due(self, now_ns: int | None = None) -> int:
        """Make every scheduled row whose time has come visible, in ``visible_at`` order."""
        if now_ns is None:
            now_ns = time.time_ns()
        published = 0
        with self.lock:
            while self._pending and self._pending[0][0] <= now_ns:
                _, _, name, row = heapq.heappop(self._pending)
                self._seq += 1
                self.streams[name].add(row, self._seq)
                published += 1
        return published

    # --- reading -----------------------------------------------------------------------

    def pending_count(self, name: str | None = None) -> int:
        with self.lock:
            return sum(1 for entry in self._pending if name is None or entry[2] == name)

    def next_pending_at(self) -> int | None:
        """Wall-clock ns when the next scheduled record becomes visible, if any."""
        with self.lock:
            return self._pending[0][0] if self._pending else None

    def truth(self, name: str) -> list[tuple[str, int]]:
        """``(key, time_ns)`` of every record visible now, in filter-time order.

        ``time_ns`` is the registry's time field (``StreamSpec.record_time_ns``).
        """
        self.publish_due()
        stream = self.stream(name)
        with self.lock:
            return list(zip(stream.keys, stream.record_times, strict=True))

    def filter_truth(self, name: str) -> list[tuple[str, int]]:
        """``(key, filter time)``: the time ``after:``/``before:`` compare for each visible record.

        Differs from ``truth`` only for queries under ``queries_time=completed``.
        """
        self.publish_due()
        stream = self.stream(name)
        with self.lock:
            return list(zip(stream.keys, stream.times, strict=True))

    def all_keys(self, name: str) -> set[str]:
        self.publish_due()
        with self.lock:
            return self.stream(name).key_set()

    def count(self, name: str) -> int:
        self.publish_due()
        with self.lock:
            return len(self.stream(name))

    def iter_truth(self) -> Iterator[TruthEntry]:
        """Every visible record of every stream (a consistent copy, taken under the lock)."""
        self.publish_due()
        with self.lock:
            copies = [(name, list(s.keys), array("q", s.record_times)) for name, s in self.streams.items()]
        for name, keys, times in copies:
            for key, when in zip(keys, times, strict=True):
                yield TruthEntry(name, key, when)
