"""Listing a stream's next slices ahead while it catches up.

A backfill, or a catch-up after downtime, walks a stream's past slice by slice
(``[streams] slice``), and every page is a round trip to the API: listed one after the
other, the API's latency sets the pace, not our CPU (a remote API answering a page in
100 ms caps one sequential listing at ten pages a second). ``SliceLister`` keeps up to
``ahead`` of the following slices listing concurrently, each into a small buffer of pages,
while the poller still takes every slice strictly in order: dedupe, delivery and
checkpoints see exactly the sequence of pages they would see without it.

Only slices that are already complete are listed ahead (their end lies behind now - settle,
so the window the poller computes next is exactly that one); the last, still growing
window is listed when its turn comes. Memory is bounded by ``ahead`` x (``buffer_pages``
+ 1) pages per stream: a listing ahead stops once its buffer is full and it holds the next
page. A failed slice fails when its turn comes, and the poller then discards
every listing ahead (they are redone after the backoff, so nothing is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from auditstream.engine.window import Window, WindowPolicy, next_window
from auditstream.sdm.client import AuditClient, Page
from auditstream.sdm.registry import StreamSpec


@dataclass(frozen=True)
class _End:
    """The slice has no more pages."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_Item = Page | _End | _Failed


@dataclass
class _Listing:
    task: asyncio.Task[None]
    pages: asyncio.Queue[_Item]


def slices_ahead(after: Window, now_ns: int, policy: WindowPolicy, count: int) -> list[Window]:
    """Up to ``count`` windows following ``after`` that are complete already.

    A window ending at ``now - settle`` is still growing: computed later it would end later,
    so it is not listed ahead (and neither is anything after it).
    """
    upcoming: list[Window] = []
    end = after.end_ns
    while len(upcoming) < count:
        window = next_window(end, now_ns, policy)
        if window is None or window.end_ns >= now_ns - policy.settle_ns:
            break
        upcoming.append(window)
        end = window.end_ns
    return upcoming


class SliceLister:
    """The pages of one stream's windows, some of them listed before their turn."""

    def __init__(self, client: AuditClient, spec: StreamSpec, ahead: int, buffer_pages: int = 1) -> None:
        self._client = client
        self._spec = spec
        self._ahead = ahead
        self._buffer_pages = buffer_pages
        self._listings: dict[Window, _Listing] = {}

    @property
    def ahead(self) -> int:
        return self._ahead

    @property
    def listing_ahead(self) -> int:
        """How many slices are being (or have been) listed ahead right now."""
        return len(self._listings)

    async def pages(self, window: Window, upcoming: Sequence[Window] = ()) -> AsyncGenerator[Page, None]:
        """``window``'s pages in API order; meanwhile ``upcoming`` windows start listing."""
        listing = self._listings.pop(window, None)
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

    def _start(self, upcoming: Sequence[Window]) -> None:
        wanted = set(upcoming[: self._ahead])
        for stale in [w for w in self._listings if w not in wanted]:  # no longer what comes next
            self._listings.pop(stale).task.cancel()
        for window in upcoming[: self._ahead]:
            if window not in self._listings:
                pages: asyncio.Queue[_Item] = asyncio.Queue(maxsize=self._buffer_pages)
                task = asyncio.create_task(
                    self._fill(window, pages), name=f"list-ahead-{self._spec.name}-{window.end_ns}"
                )
                self._listings[window] = _Listing(task, pages)

    def _listing(self, window: Window) -> AsyncGenerator[Page, None]:
        return self._client.pages(self._spec, window.start_ns, window.end_ns)

    async def _fill(self, window: Window, pages: asyncio.Queue[_Item]) -> None:
        try:
            async with contextlib.aclosing(self._listing(window)) as listing:
                async for page in listing:
                    await pages.put(page)  # blocks while the buffer is full: bounded memory
        except Exception as exc:  # handed to the poller when this slice's turn comes
            await pages.put(_Failed(exc))
            return
        await pages.put(_End())

    async def discard(self) -> None:
        """Stop and forget every listing ahead (after an error, and when the poller stops)."""
        listings, self._listings = list(self._listings.values()), {}
        for listing in listings:
            await _cancel(listing.task)


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
