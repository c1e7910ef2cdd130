"""Pagination: every visible record exactly once, whatever the order, page shape or inserts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditstream.emulator import Emulator, Order, PageOrder
from auditstream.emulator.cursor import (
    INT64_MAX,
    INT64_MIN,
    CursorError,
    Listing,
    Position,
    decode_cursor,
    encode_cursor,
)
from tests.helpers import async_wait_until

from . import rawclient
from .rawclient import RawClient, list_all

MakeEmulator = Callable[..., Awaitable[Emulator]]
STREAMS_UNDER_TEST = ("activities", "queries", "roles_history")


def monotonic(times: list[int], descending: bool = False) -> bool:
    pairs = itertools.pairwise(times)
    return all(a >= b for a, b in pairs) if descending else all(a <= b for a, b in pairs)


@pytest.mark.parametrize("same_timestamp", [1, 7])
@pytest.mark.parametrize("short_pages", [0.0, 0.4])
@pytest.mark.parametrize("order", list(Order))
async def test_full_listing_returns_every_record_once(
    make_emulator: MakeEmulator, order: Order, short_pages: float, same_timestamp: int
) -> None:
    emu = await make_emulator(
        records=500, history_records=300, streams=STREAMS_UNDER_TEST, order=order,
        short_pages=short_pages, same_timestamp=same_timestamp,
    )  # fmt: skip
    for stream in STREAMS_UNDER_TEST:
        listing = await list_all(emu, stream, limit=23)
        keys = listing.keys()
        assert max(keys.values()) == 1, f"{stream}: duplicates"
        assert set(keys) == emu.all_keys(stream), stream
        sizes = [len(times) for times in listing.page_times()]
        assert max(sizes) <= 23
        if short_pages:
            assert any(size < 23 for size in sizes[:-1]), "no short page before the last"
        else:
            assert all(size == 23 for size in sizes[:-1])
        if stream == "queries":
            continue  # its filter time is completed_at, not the record time checked below
        flat = [t for times in listing.page_times() for t in times]
        if same_timestamp > 1:
            assert max(map(flat.count, set(flat))) >= same_timestamp
        if order is Order.OLDEST:
            assert monotonic(flat)
        elif order is Order.NEWEST:
            assert monotonic(flat, descending=True)
        else:
            assert not monotonic(flat) and not monotonic(flat, descending=True)
            for times in listing.page_times():
                if len(set(times)) >= 3:
                    assert not monotonic(times) and not monotonic(times, descending=True), times
        if order is Order.OLDEST and same_timestamp > 1 and not short_pages:
            boundaries = [(a[-1], b[0]) for a, b in itertools.pairwise(listing.page_times()) if a and b]
            assert any(x == y for x, y in boundaries), "no page boundary inside a same-timestamp group"


async def test_short_pages_can_be_empty_yet_carry_a_cursor(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=300, streams=("activities",), short_pages=0.7)
    listing = await list_all(emu, "activities", limit=5)
    assert set(listing.keys()) == emu.all_keys("activities")
    assert any(not page.activities and page.meta.next_cursor for page in listing.pages)


async def test_page_size_cap_and_sdk_default(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=300, streams=("activities",), max_page_size=40, order=Order.OLDEST)
    async with RawClient(emu) as client:
        assert len((await client.list("activities", limit=1000)).activities) == 40
        assert len((await client.list("activities", limit=0)).activities) == 40  # 50 capped to 40
    emu = await make_emulator(records=300, streams=("activities",))
    async with RawClient(emu) as client:
        assert len((await client.list("activities", limit=0)).activities) == 50
        assert len((await client.list("activities", limit=7)).activities) == 7


async def test_responses_stay_under_the_byte_budget(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=300, streams=("queries",), hostile=True, max_response_bytes=60_000)
    listing = await list_all(emu, "queries", limit=1000)
    assert set(listing.keys()) == emu.all_keys("queries")
    assert len(listing.pages) > 3
    for page in listing.pages:
        records = page.queries
        assert sum(r.ByteSize() for r in records) <= 60_000 or len(records) == 1


@pytest.mark.parametrize("order", list(Order))
async def test_stable_under_concurrent_live_inserts(make_emulator: MakeEmulator, order: Order) -> None:
    """Records visible at the first page appear exactly once; later ones may or may not."""
    emu = await make_emulator(
        records=400, history_records=100, order=order, live=1500, late_rate=0.5, late_max_seconds=86_400,
        streams=("activities", "queries", "roles_history"), short_pages=0.2,
    )  # fmt: skip
    for stream in ("activities", "queries"):
        before = emu.all_keys(stream)  # visible before the listing began
        async with RawClient(emu) as client:
            first = await client.list(stream, limit=9)
            # Live inserts land mid-listing, for certain: the rest waits until 20 are in.
            wanted = len(before) + 20
            await async_wait_until(lambda s=stream, n=wanted: len(emu.all_keys(s)) > n, 10, "live inserts")
            listing = rawclient.Listing(stream, [first])
            cursor = first.meta.next_cursor
            while cursor:
                page = await client.list(stream, limit=9, cursor=cursor)
                listing.pages.append(page)
                cursor = page.meta.next_cursor
        after = emu.all_keys(stream)
        keys = listing.keys()
        assert max(keys.values()) == 1
        assert before <= set(keys) <= after


async def test_cursor_misuse_is_invalid_argument(emulator: Emulator) -> None:
    async with RawClient(emulator) as client:
        first = await client.list("activities", limit=5)
        cursor = first.meta.next_cursor
        assert cursor
        tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
        attempts = [
            ("activities", "", tampered),
            ("activities", "verb:x", cursor),  # the filter changed between pages
            ("roles_history", "", cursor),  # another stream's cursor
            ("activities", "", "not a cursor!"),
        ]
        for stream, text, bad in attempts:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.list(stream, filter_text=text, cursor=bad)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- the cursor itself ---------------------------------------------------------------


def test_cursor_round_trip_and_binding() -> None:
    listing = Listing(
        1, 2, snapshot=99, lo=INT64_MIN, hi=5, order=Order.UNORDERED, salt=7, buckets=3, origin=-4, width=9
    )
    for position in (Position(), Position(2, -17, 4), Position(0, INT64_MAX, 2**40)):
        text = encode_cursor(listing, position)
        assert decode_cursor(text, stream_tag=1, filter_tag=2) == (listing, position)
    with pytest.raises(CursorError):
        decode_cursor(encode_cursor(listing, Position()), stream_tag=1, filter_tag=3)


@given(
    salt=st.integers(0, 2**32 - 1),
    buckets=st.integers(1, 64),
    origin=st.integers(-(10**6), 10**6),
    width=st.integers(1, 10**4),
    lo=st.integers(-(2**20), 2**20),
    span=st.integers(0, 2**21),
)
def test_unordered_segments_partition_the_window(
    salt: int, buckets: int, origin: int, width: int, lo: int, span: int
) -> None:
    listing = Listing(0, 0, 0, lo, lo + span, Order.UNORDERED, salt, buckets, origin, width)
    segments = sorted(listing.segment(k)[:2] for k in range(listing.segment_count))
    covered = [(a, b) for a, b in segments if a <= b]
    assert covered[0][0] == lo and covered[-1][1] == lo + span
    for (_, end), (start, _) in itertools.pairwise(covered):
        assert start == end + 1  # no gap, no overlap
    assert len({(listing._multiplier() * k + salt) % buckets for k in range(buckets)}) == buckets


async def test_pages_are_served_while_the_listing_walks(make_emulator: MakeEmulator) -> None:
    """Two interleaved listings of one stream do not disturb each other."""
    emu = await make_emulator(records=300, streams=("activities",), short_pages=0.3)
    first, second = await asyncio.gather(
        list_all(emu, "activities", limit=11), list_all(emu, "activities", limit=13)
    )
    assert first.keys() == second.keys()
    assert set(first.keys()) == emu.all_keys("activities")


@pytest.mark.parametrize(
    ("order", "page_order"), [(Order.OLDEST, PageOrder.SHUFFLED), (Order.UNORDERED, PageOrder.SORTED)]
)
async def test_page_order_is_independent_of_listing_order(
    make_emulator: MakeEmulator, order: Order, page_order: PageOrder
) -> None:
    emu = await make_emulator(records=300, streams=("activities",), order=order, page_order=page_order)
    pages = [
        times for times in (await list_all(emu, "activities", limit=20)).page_times() if len(set(times)) >= 3
    ]
    assert pages
    if page_order is PageOrder.SORTED:
        assert all(monotonic(times) for times in pages)
    else:
        assert not any(monotonic(times) or monotonic(times, descending=True) for times in pages)
        assert all(max(a) <= min(b) for a, b in itertools.pairwise(pages))  # still oldest first across pages
