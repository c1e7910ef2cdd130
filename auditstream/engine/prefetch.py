"""Listing a stream's next windows ahead of their turn.

Every page is a round trip to the API, and pages of one window come one after the other
(each needs the previous page's cursor): listed one window at a time, the API's latency
sets the pace, not our CPU (a remote API answering a page in 100 ms caps one sequential
listing at ten pages a second). The planner cuts dense ground into several windows
(engine.window); ``SliceLister`` keeps up to ``ahead`` of the planned windows that follow
the current one listing concurrently, each into a small buffer of pages, while the poller
still takes every window in its turn: dedupe, delivery and checkpoints see the pages in the
order they would see without it.

Listings ahead take a slot of one budget shared by every stream of the process
(``AheadBudget``, ``[engine] slices_ahead``), so memory is bounded by slots x
(``buffer_pages`` + 1) pages however many streams catch up at once: a listing ahead stops
once its buffer is full and it holds the next page. A probe window stops after its first
page when more follow (the poller replaces it). A failed window fails when its turn comes,
and the poller then discards every listing ahead (they are redone after the backoff, so
nothing is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from auditstream.engine.window import Window
from auditstream.sdm.client import AuditClient, Page
from auditstream.sdm.registry import StreamSpec


@dataclass(frozen=True)
class _End:
    """The window has no more pages."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_Item = Page | _End | _Failed


@dataclass
class _Listing:
    task: asyncio.Task[None]
    pages: asyncio.Queue[_Item]


class AheadBudget:
    """Slices that may be listed ahead at once, over every stream of the process.

    One budget for all streams rather than one per stream: a backfill of 28 streams then
    holds no more listings ahead in memory than a backfill of one, and the slots go to
    whichever streams still have windows to list.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots

    @property
    def free(self) -> int:
        return self._free

    def take(self) -> bool:
        if self._free <= 0:
            return False
        self._free -= 1
        return True

    def give_back(self) -> None:
        self._free = min(self._free + 1, self.slots)


class SliceLister:
    """The pages of one stream's windows, some of them listed before their turn."""

    def __init__(
        self, client: AuditClient, spec: StreamSpec, budget: AheadBudget, buffer_pages: int = 4
    ) -> None:
        self._client = client
        self._spec = spec
        self._budget = budget
        self._buffer_pages = buffer_pages
        self._listings: dict[Window, _Listing] = {}

    @property
    def ahead(self) -> int:
        """The most windows this stream may list ahead (when the budget has them free)."""
        return self._budget.slots

    @property
    def listing_ahead(self) -> int:
        """How many windows are being (or have been) listed ahead right now."""
        return len(self._listings)

    async def pages(self, window: Window, upcoming: Sequence[Window] = ()) -> AsyncGenerator[Page, None]:
        """``window``'s pages in API order; meanwhile ``upcoming`` windows start listing."""
        listing = self._forget(window)
        self._start(upcoming)
        if listing is None:
            async with contextlib.aclosing(self._listing(window)) as pages:
                async for page in pages:
                    yield page
            return
        try:
            while True:
                item = await listing.pages.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            await _cancel(listing.task)

    def _forget(self, window: Window) -> _Listing | None:
        """Take a listing ahead out of the table, giving its slot back to the budget."""
        listing = self._listings.pop(window, None)
        if listing is not None:
            self._budget.give_back()
        return listing

    def _start(self, upcoming: Sequence[Window]) -> None:
        wanted = upcoming[: self.ahead]
        for stale in [w for w in self._listings if w not in wanted]:  # no longer what comes next
            listing = self._forget(stale)
            assert listing is not None
            listing.task.cancel()
        for window in wanted:
            if window not in self._listings:
                if not self._budget.take():
                    return  # every slot is busy: the rest is listed in its turn
                pages: asyncio.Queue[_Item] = asyncio.Queue(maxsize=self._buffer_pages)
                task = asyncio.create_task(
                    self._fill(window, pages), name=f"list-ahead-{self._spec.name}-{window.end_ns}"
                )
                self._listings[window] = _Listing(task, pages)

    def _listing(self, window: Window) -> AsyncGenerator[Page, None]:
        return self._client.pages(self._spec, window.start_ns, window.before_ns, urgent=window.urgent)

    async def _fill(self, window: Window, pages: asyncio.Queue[_Item]) -> None:
        try:
            async with contextlib.aclosing(self._listing(window)) as listing:
                async for page in listing:
                    await pages.put(page)  # blocks while the buffer is full: bounded memory
                    if window.probe and page.has_more:
                        break  # the poller stops here too and replaces the window
        except Exception as exc:  # handed to the poller when this window's turn comes
            await pages.put(_Failed(exc))
            return
        await pages.put(_End())

    async def discard(self) -> None:
        """Stop and forget every listing ahead (after an error, and when the poller stops)."""
        for window in list(self._listings):
            listing = self._forget(window)
            assert listing is not None
            await _cancel(listing.task)


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
