"""Windows listed ahead: taken strictly in order, bounded in bytes, and a failure surfaces in
its turn; the byte budget shared by every stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auditstream.engine.prefetch import AheadBudget, BufferBudget, SliceLister
from auditstream.engine.window import Window
from auditstream.sdm.client import Page
from auditstream.sdm.errors import TransientApiError
from auditstream.sdm.registry import STREAMS
from tests.helpers import async_wait_until

S = 1_000_000_000
HOUR = 3600 * S
DEADLINE = 5.0


class FakeClient:
    """Pages per window; notes when each window's listing starts and how many run at once."""

    def __init__(self, pages_per_window: int = 3, fail: set[int] | None = None, page_bytes: int = 0) -> None:
        self.pages_per_window = pages_per_window
        self.fail = fail or set()
        self.page_bytes = page_bytes
        self.started: list[int] = []
        self.served: dict[int, int] = {}  # pages answered, per window (by its before bound)
        self.running = 0
        self.most_running = 0
        self.gate = asyncio.Event()  # listings block until a test opens it
        self.gate.set()

    async def pages(
        self, spec: Any, after_ns: int, before_ns: int, extra: str = "", *, urgent: bool = True
    ) -> AsyncIterator[Page]:
        self.started.append(before_ns)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            for number in range(self.pages_per_window):
                await self.gate.wait()
                if before_ns in self.fail and number == 1:
                    raise TransientApiError("unavailable")
                more = number < self.pages_per_window - 1
                self.served[before_ns] = self.served.get(before_ns, 0) + 1
                yield Page(
                    records=[(before_ns, number)], rate_limit=None, has_more=more, size_bytes=self.page_bytes
                )
        finally:
            self.running -= 1


async def wait_for(condition: Any) -> None:
    await async_wait_until(condition, DEADLINE)


async def consume(lister: SliceLister, windows: list[Window], index: int) -> list[Any]:
    out = []
    async for page in lister.pages(windows[index], windows[index + 1 :]):
        out.extend(page.records)
    return out


def hour_windows(count: int) -> list[Window]:
    return [Window(h * HOUR, (h + 1) * HOUR) for h in range(count)]


async def test_windows_come_out_in_order_while_the_next_ones_list_concurrently():
    client = FakeClient()
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(3))  # type: ignore[arg-type]
    windows = hour_windows(6)
    client.gate.clear()
    first = asyncio.create_task(consume(lister, windows, 0))
    await wait_for(lambda: len(client.started) == 4)
    assert client.most_running == 4, "the window in its turn plus three ahead"
    client.gate.set()
    records = await first
    for index in range(1, 6):
        records += await consume(lister, windows, index)
    assert records == [(w.end_ns, n) for w in windows for n in range(3)], "the same pages, in order"
    assert sorted(client.started) == client.started == [w.end_ns for w in windows], "each listed once"
    assert lister.listing_ahead == 0


async def test_the_buffer_bounds_the_bytes_listed_ahead_and_consumed_pages_free_it():
    client = FakeClient(pages_per_window=50, page_bytes=100)
    buffer = BufferBudget(450)
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(2), buffer)  # type: ignore[arg-type]
    windows = hour_windows(3)
    pages = lister.pages(windows[0], windows[1:])
    await anext(pages)  # window 0's first page, in its turn: charged, not yet released

    def ahead() -> int:
        return client.served.get(windows[1].end_ns, 0) + client.served.get(windows[2].end_ns, 0)

    await wait_for(lambda: len(buffer._waiters) == 2)  # both listings ahead wait for room
    assert ahead() == 3, "pages ahead stop once one more would not fit (450 bytes, 100 a page)"
    assert buffer.held == 400
    lister.holding.release(100)  # window 0's page delivered: room for one more page ahead
    await wait_for(lambda: ahead() == 4 and len(buffer._waiters) == 2)
    assert buffer.held == 400
    await pages.aclose()
    await lister.discard()
    assert client.running == 0 and lister.listing_ahead == 0
    assert buffer.held == 0, "pages buffered and never taken are released with their listings"


async def test_a_failed_window_fails_in_its_turn_and_discard_forgets_the_rest():
    windows = hour_windows(4)
    client = FakeClient(fail={windows[2].end_ns})
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(3))  # type: ignore[arg-type]
    assert len(await consume(lister, windows, 0)) == 3
    assert len(await consume(lister, windows, 1)) == 3, "the failure ahead does not touch this window"
    with pytest.raises(TransientApiError):
        await consume(lister, windows, 2)
    await lister.discard()
    assert lister.listing_ahead == 0 and client.running == 0
    client.fail.clear()
    assert await consume(lister, windows, 2) == [(windows[2].end_ns, n) for n in range(3)], "listed again"


async def test_windows_no_longer_upcoming_are_cancelled():
    client = FakeClient()
    client.gate.clear()
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(2))  # type: ignore[arg-type]
    windows = hour_windows(3)
    pages = lister.pages(windows[0], windows[1:])
    task = asyncio.create_task(anext(pages))
    await wait_for(lambda: client.running == 3)
    other = lister.pages(Window(0, 99 * HOUR), [])  # a different future: nothing ahead is wanted
    client.gate.set()
    await task
    async for _ in other:
        pass
    await wait_for(lambda: lister.listing_ahead == 0)
    await wait_for(lambda: client.running == 1)  # the two listings ahead were stopped and closed
    await pages.aclose()
    assert client.running == 0


async def test_ahead_zero_lists_each_window_in_its_turn_only():
    client = FakeClient()
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(0))  # type: ignore[arg-type]
    windows = hour_windows(3)
    for index in range(3):
        await consume(lister, windows, index)
    assert client.most_running == 1


async def test_one_budget_bounds_the_listings_ahead_of_every_stream_together():
    budget = AheadBudget(3)
    clients = [FakeClient(), FakeClient()]
    for client in clients:
        client.gate.clear()
    listers = [SliceLister(c, STREAMS["activities"], budget) for c in clients]  # type: ignore[arg-type]
    windows = hour_windows(6)
    first = [lister.pages(windows[0], windows[1:]) for lister in listers]
    waiting = [asyncio.create_task(anext(pages)) for pages in first]
    await wait_for(lambda: sum(c.running for c in clients) == 5)
    assert sum(lister.listing_ahead for lister in listers) == 3 and budget.free == 0
    assert [lister.listing_ahead for lister in listers] == [3, 0], "the first stream took the free slots"
    for client in clients:
        client.gate.set()
    await asyncio.gather(*waiting)
    for pages in first:
        await pages.aclose()
    for lister in listers:
        await lister.discard()
    assert budget.free == 3, "every slot is given back"
    assert sum(c.running for c in clients) == 0


async def test_a_probe_listed_ahead_stops_after_its_first_page_when_more_follow():
    """A probe is replaced when it does not fit one page: listing it further ahead would
    only spend calls on pages nobody takes."""
    client = FakeClient(pages_per_window=5)
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(2))  # type: ignore[arg-type]
    windows = [Window(0, HOUR), Window(HOUR, 2 * HOUR, probe=True)]
    assert len(await consume(lister, windows, 0)) == 5
    probe = await consume(lister, windows, 1)
    assert probe == [(2 * HOUR, 0)], "the first page only"
    assert client.started.count(2 * HOUR) == 1


async def test_a_window_listed_ahead_stops_waiting_for_room_when_its_turn_comes():
    """The buffer may be full of pages that wait behind this window (other streams' or its own
    successors'): held back in its turn, it would never free them."""
    client = FakeClient(pages_per_window=5, page_bytes=100)
    buffer = BufferBudget(250)
    buffer.holding().charge(1_000)  # another stream's pages, not delivered (its sink is down)
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(1), buffer)  # type: ignore[arg-type]
    windows = hour_windows(2)
    assert len(await consume(lister, windows, 0)) == 5, "the window in its turn does not wait"
    await wait_for(lambda: len(buffer._waiters) == 1)
    assert windows[1].end_ns not in client.served, "the window ahead waits: its stream holds pages"
    in_turn = await asyncio.wait_for(consume(lister, windows, 1), DEADLINE)
    assert len(in_turn) == 5, "and lists through once its turn comes"


async def test_a_stream_that_holds_nothing_may_always_list_a_page():
    buffer = BufferBudget(100)
    busy, idle = buffer.holding(), buffer.holding()
    busy.charge(500)
    await asyncio.wait_for(idle.reserve(), DEADLINE)  # the bound never stops a stream outright
    waiting = asyncio.create_task(busy.reserve())
    await wait_for(lambda: len(buffer._waiters) == 1)
    busy.release(500)
    assert await asyncio.wait_for(waiting, DEADLINE) == 500, "woken by the release; reserves its page size"
    assert busy.held == 500 and buffer.held == 500
