"""Serve one page of a listing: walk the time index from a cursor, exactly once.

See :mod:`auditstream.emulator.cursor` for why a snapshot seq plus a keyset position
makes every record that was visible at the first page appear exactly once, whatever the
order mode, short pages or inserts in between. The walk runs under the store lock (array
indexes are only valid while nothing is inserted); protobuf parsing of the page happens
afterwards, outside it.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from auditstream.emulator.cursor import INT64_MAX, INT64_MIN, Listing, Position
from auditstream.emulator.options import Order
from auditstream.emulator.store import StreamStore

MAX_BUCKETS = 4096


@dataclass(frozen=True)
class Page:
    records: list[tuple[int, bytes]]  # (filter time, serialized record), traversal order
    next_position: Position | None  # None: the listing is complete


def start_listing(
    stream: StreamStore,
    *,
    snapshot: int,
    window: tuple[int | None, int | None],
    order: Order,
    salt: int,
    page_size: int,
    stream_tag: int,
    filter_tag: int,
) -> Listing:
    """Freeze the plan of a new listing (window, and for ``unordered`` its time buckets).

    ``unordered`` aims at about one page per bucket, so a page often straddles two buckets
    far apart in time and consecutive pages jump around, as an unsorted backend would.
    """
    lo = INT64_MIN if window[0] is None else window[0]
    hi = INT64_MAX if window[1] is None else window[1]
    if order is not Order.UNORDERED or lo > hi:
        return Listing(stream_tag, filter_tag, snapshot, lo, hi, order, salt)
    start, end = stream.index_range(lo, hi)
    count = end - start
    if count == 0:
        return Listing(stream_tag, filter_tag, snapshot, lo, hi, order, salt)
    first, last = stream.times[start], stream.times[end - 1]
    buckets = max(1, min(MAX_BUCKETS, math.ceil(count / page_size)))
    width = max(1, math.ceil((last - first + 1) / buckets))
    return Listing(stream_tag, filter_tag, snapshot, lo, hi, order, salt, buckets, first, width)


def _walk(stream: StreamStore, listing: Listing, position: Position) -> Iterator[tuple[int, int]]:
    """``(segment, index)`` of every stored record after ``position``, in traversal order."""
    for k in range(position.segment, listing.segment_count):
        lo, hi, descending = listing.segment(k)
        if lo > hi:
            continue
        start, end = stream.index_range(lo, hi)
        resume = k == position.segment and position.time_ns is not None
        if descending:
            top = end
            if resume:
                assert position.time_ns is not None
                top = min(end, stream.index_before(position.time_ns, position.seq))
            yield from ((k, i) for i in range(top - 1, start - 1, -1))
        else:
            bottom = start
            if resume:
                assert position.time_ns is not None
                bottom = max(start, stream.index_after(position.time_ns, position.seq))
            yield from ((k, i) for i in range(bottom, end))


def read_page(
    stream: StreamStore,
    listing: Listing,
    position: Position,
    *,
    want: int,
    predicate: Callable[[bytes], bool] | None,
    max_bytes: int,
    scan_budget: int,
) -> Page:
    """Collect up to ``want`` records visible in the listing's snapshot that pass ``predicate``.

    Stops early (a short page that still has a cursor) when the response would exceed
    ``max_bytes`` or after examining ``scan_budget`` records, so no request costs more
    than a bounded amount of work however selective the filter is. The caller holds the
    store lock.
    """
    times, seqs, payloads = stream.times, stream.seqs, stream.payloads
    snapshot = listing.snapshot
    collected: list[tuple[int, bytes]] = []
    size = 0
    last: tuple[int, int] | None = None  # (segment, index) of the last record consumed

    def stop_here() -> Page:
        if last is None:
            return Page(collected, position)
        k, i = last
        return Page(collected, Position(k, times[i], seqs[i]))

    walk = _walk(stream, listing, position)
    for examined, (k, i) in enumerate(walk):
        if len(collected) >= want or examined >= scan_budget:
            rest = itertools.chain([(k, i)], walk)
            more = _any_left(rest, seqs, payloads, snapshot, predicate, scan_budget)
            return stop_here() if more else Page(collected, None)
        if seqs[i] <= snapshot and (predicate is None or predicate(payloads[i])):
            payload = payloads[i]
            if collected and size + len(payload) > max_bytes:
                return stop_here()
            collected.append((times[i], payload))
            size += len(payload)
        last = (k, i)
    return Page(collected, None)


def _any_left(
    rest: Iterator[tuple[int, int]],
    seqs: array[int],
    payloads: list[bytes],
    snapshot: int,
    predicate: Callable[[bytes], bool] | None,
    budget: int,
) -> bool:
    """Whether a qualifying record remains; True when unsure (budget spent), as a server
    that cannot tell sends a cursor and lets the next page come back empty."""
    for _, i in itertools.islice(rest, budget):
        if seqs[i] <= snapshot and (predicate is None or predicate(payloads[i])):
            return True
    return next(rest, None) is not None
