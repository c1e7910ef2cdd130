"""Windows listed ahead: taken strictly in order, bounded, and a failure surfaces in its turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auditstream.engine.prefetch import AheadBudget, SliceLister
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

    def __init__(self, pages_per_window: int = 3, fail: set[int] | None = None) -> None:
        self.pages_per_window = pages_per_window
        self.fail = fail or set()
        self.started: list[int] = []
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
                yield Page(records=[(before_ns, number)], rate_limit=None, has_more=more)
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


async def test_buffers_bound_what_is_listed_ahead():
    client = FakeClient(pages_per_window=50)
    lister = SliceLister(client, STREAMS["activities"], AheadBudget(2), buffer_pages=2)  # type: ignore[arg-type]
    windows = hour_windows(3)
    pages = lister.pages(windows[0], windows[1:])
    await anext(pages)
    await wait_for(lambda: len(client.started) == 3)
    await wait_for(lambda: all(listing.pages.full() for listing in lister._listings.values()))
    assert client.running == 3, "listings ahead wait on their full buffers instead of finishing"
    await pages.aclose()
    await lister.discard()
    assert client.running == 0 and lister.listing_ahead == 0


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
