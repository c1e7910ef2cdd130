"""Listing several windows of a stream at once, within a memory bound counted in bytes.

Every page is a round trip to the API, and pages of one window come one after the other
(each needs the previous page's cursor): listed one window at a time, the API's latency
sets the pace, not our CPU (a remote API answering a page in 100 ms caps one sequential
listing at ten pages a second). The planner cuts dense ground into several windows
(engine.window), and this module lists some of them concurrently, in one of two ways:

* **in time order** (live polling and catch-up): ``SliceLister.pages`` keeps up to
  ``ahead`` of the planned windows that follow the current one listing concurrently, each
  into a buffer of pages, while the poller still takes every window in its turn: dedupe,
  delivery and checkpoints see the pages in the order they would see without it. A failed
  window fails when its turn comes, and the poller then discards every listing ahead (they
  are redone after the backoff, so nothing is skipped).
* **in any order** (a backfill, whose windows every SIEM indexes by event time anyway):
  ``SliceLister.listing`` lists one window whose pages the poller hands over as they come;
  the poller runs several at once (engine.poller), and its marks still move only over
  contiguous completed ground.

Two budgets shared by every stream of the process bound this. ``AheadBudget`` (``[engine]
slices_ahead``) counts windows listed beyond one per stream: the calls in flight at once.
``BufferBudget`` (``[engine] buffer_bytes``) counts the bytes of the pages listed and not
yet delivered, in buffers, in the poller's queue and at the sinks: a page is charged when it
arrives, at its size on the wire (``Page.size_bytes``), and released once every sink has
acknowledged its records. Bytes, not pages, because a page's size depends on its stream and
on ``page_size``: a count of pages that keeps a backfill under its memory target with pages
of 137 activities is six times too many with pages of 1,000 queries carrying SQL bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
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
UNBOUNDED = 1 << 62


@dataclass
class _Listing:
    task: asyncio.Task[None]
    pages: asyncio.Queue[_Item]
    # Set when the window's turn comes: from then on it no longer waits for room (the
    # windows after it hold the buffer and are only taken after it).
    in_turn: asyncio.Event


class AheadBudget:
    """Windows that may be listed beyond one per stream at once, over every stream.

    One budget for all streams rather than one per stream: a backfill of 28 streams then
    makes no more calls at once than a backfill of one, and the slots go to whichever
    streams still have windows to list.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots
        self._waiters: list[asyncio.Future[None]] = []

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
        _wake(self._waiters)

    def when_free(self) -> asyncio.Future[None]:
        """Resolved at the next :meth:`give_back`: a stream waiting for a slot to list one
        more window learns that another stream has finished one."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters = [w for w in self._waiters if not w.done()]  # those given up on
        self._waiters.append(waiter)
        return waiter


class Holding:
    """What one stream holds of a :class:`BufferBudget`: charged pages and the reservation
    of the page being asked for."""

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0
        self.page_bytes = 0  # the size of its last page: what the next one is expected to be

    async def reserve(self, in_turn: asyncio.Event | None = None) -> int:
        """Wait for room for a page like the last one (or for ``in_turn``), and hold it;
        the bytes reserved."""
        size = self.page_bytes
        await self.budget.take(self, size, in_turn)
        return size

    def arrived(self, reserved: int, size: int) -> None:
        """A page of ``size`` bytes came in for a reservation of ``reserved``."""
        self.page_bytes = size
        self._add(size - reserved)
        if size < reserved:
            self.budget.released()

    def charge(self, size: int) -> None:
        """A page that did not wait for room (a window in its turn: never held back)."""
        self.page_bytes = size
        self._add(size)

    def release(self, size: int) -> None:
        """A page delivered (or found to hold nothing new), or a reservation not used."""
        self._add(-size)
        self.budget.released()

    def _add(self, size: int) -> None:
        self.held += size
        self.budget.held += size


@dataclass(eq=False)
class _Waiter:
    holder: Holding
    size: int
    in_turn: asyncio.Event | None
    admitted: asyncio.Future[None]


class BufferBudget:
    """Bytes of pages listed and not yet delivered, over every stream of the process.

    A listing asks for its next page only when the pages held, plus one like its stream's
    last, stay within ``limit``, or when its stream holds nothing at all: every stream can
    always list one page, so a stream whose sink is down (its pages held until the sink
    comes back) never stops the others, and the bound is exceeded by at most a page per
    stream (a page can also be larger than the one before it). Waiting listings are
    admitted in order as bytes are released, each holding its bytes from the moment it is
    admitted, so two listings woken together never both take the last room.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: deque[_Waiter] = deque()

    def holding(self) -> Holding:
        return Holding(self)

    def _admits(self, holder: Holding, size: int, in_turn: asyncio.Event | None) -> bool:
        if holder.held <= 0 or self.held + size <= self.limit:
            return True
        return in_turn is not None and in_turn.is_set()

    async def take(self, holder: Holding, size: int, in_turn: asyncio.Event | None = None) -> None:
        """Hold ``size`` bytes more for ``holder`` once they fit (or ``in_turn`` is set)."""
        if self._admits(holder, size, in_turn):
            holder._add(size)
            return
        waiter = _Waiter(holder, size, in_turn, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.admitted
        except asyncio.CancelledError:
            if waiter.admitted.done() and not waiter.admitted.cancelled():
                holder.release(size)  # admitted just as it was cancelled: not used
            else:
                self._waiters.remove(waiter)
            raise

    def released(self) -> None:
        """Admit the waiting listings that fit now, in order."""
        for waiter in list(self._waiters):
            if self._admits(waiter.holder, waiter.size, waiter.in_turn):
                self._waiters.remove(waiter)
                waiter.holder._add(waiter.size)
                waiter.admitted.set_result(None)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    pending = list(waiters)
    waiters.clear()
    for waiter in pending:
        if not waiter.done():
            waiter.set_result(None)


class SliceLister:
    """The pages of one stream's windows, some of them listed before their turn.

    Every page it yields is charged to the stream's :class:`Holding`; the poller releases
    its ``size_bytes`` once the page's records are delivered.
    """

    def __init__(
        self,
        client: AuditClient,
        spec: StreamSpec,
        budget: AheadBudget,
        buffer: BufferBudget | None = None,
    ) -> None:
        self._client = client
        self._spec = spec
        self._budget = budget
        self.holding = (buffer or BufferBudget(UNBOUNDED)).holding()
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
        """``window``'s pages in API order; meanwhile ``upcoming`` windows start listing.

        The window in its turn never waits for room in the buffer (it is what frees it);
        the listings ahead do.
        """
        listing = self._forget(window)
        self._start(upcoming)
        if listing is None:
            async with contextlib.aclosing(self._listing(window)) as pages:
                async for page in pages:
                    self.holding.charge(page.size_bytes)
                    yield page
            return
        listing.in_turn.set()
        self.holding.budget.released()  # if it waits for room, it waits no more
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
            self._release_buffered(listing)  # buffered and never taken: not held any more

    async def listing(
        self, window: Window, in_turn: asyncio.Event | None = None
    ) -> AsyncGenerator[Page, None]:
        """``window``'s pages in API order, each asked for once the buffer has room for it
        or ``in_turn`` is set (windows listed in any order, engine.poller; listings ahead)."""
        reserved = await self.holding.reserve(in_turn)
        try:
            async with contextlib.aclosing(self._listing(window)) as pages:
                async for page in pages:
                    self.holding.arrived(reserved, page.size_bytes)
                    reserved = 0
                    yield page
                    if page.has_more:  # the next call is made when the loop comes back
                        reserved = await self.holding.reserve(in_turn)
        finally:
            if reserved:
                self.holding.release(reserved)

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
            self._release_buffered(listing)
        for window in wanted:
            if window not in self._listings:
                if not self._budget.take():
                    return  # every slot is busy: the rest is listed in its turn
                pages: asyncio.Queue[_Item] = asyncio.Queue()
                in_turn = asyncio.Event()
                task = asyncio.create_task(
                    self._fill(window, pages, in_turn), name=f"list-ahead-{self._spec.name}-{window.end_ns}"
                )
                self._listings[window] = _Listing(task, pages, in_turn)

    def _listing(self, window: Window) -> AsyncGenerator[Page, None]:
        return self._client.pages(self._spec, window.start_ns, window.before_ns, urgent=window.urgent)

    async def _fill(self, window: Window, pages: asyncio.Queue[_Item], in_turn: asyncio.Event) -> None:
        try:
            async with contextlib.aclosing(self.listing(window, in_turn)) as listing:
                async for page in listing:
                    pages.put_nowait(page)  # bounded by the buffer's bytes: listing() waits for room
                    if window.probe and page.has_more:
                        break  # the poller stops here too and replaces the window
        except Exception as exc:  # handed to the poller when this window's turn comes
            pages.put_nowait(_Failed(exc))
            return
        pages.put_nowait(_End())

    def _release_buffered(self, listing: _Listing) -> None:
        while not listing.pages.empty():
            item = listing.pages.get_nowait()
            if isinstance(item, Page):
                self.holding.release(item.size_bytes)

    async def discard(self) -> None:
        """Stop and forget every listing ahead (after an error, and when the poller stops)."""
        for window in list(self._listings):
            listing = self._forget(window)
            assert listing is not None
            await _cancel(listing.task)
            self._release_buffered(listing)


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
