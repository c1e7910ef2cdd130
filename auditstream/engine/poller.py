"""One poller per stream: plan windows, list them, drop what was delivered, deliver, checkpoint.

Two tasks per stream joined by a bounded queue: the lister plans windows (engine.window) and
walks their pages (engine.prefetch); the deliverer hands batches to the fan-out and, once
every batch of a window is acknowledged, moves the stream's marks. The queue bound is the
backpressure: a sink that is down stalls its streams' listing instead of filling memory.

Live polling hands windows over in time order, some listed ahead of their turn. A backfill
(``PollerOptions.any_order``) lists several windows of a stream at once and hands each page
over as it comes: a SIEM indexes events by their time, and waiting for the earliest window
left the API's latency setting the pace. The marks move only over contiguous completed
windows either way (``window.Progress``), so a backfill stopped with later windows delivered
and an earlier one not resumes from the earlier one (their records are dropped by key when
listed again). Windows overlap at their edges, so one listing may find a record another has
claimed and not yet delivered; a window does not complete (move a mark) before every such
record is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import structlog

from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.dedupe import DeliveredKeys
from auditstream.engine.fanout import FanOut
from auditstream.engine.longqueries import LongQueryTracker
from auditstream.engine.normalize import Normalizer
from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.engine.prefetch import UNBOUNDED, AheadBudget, BufferBudget, SliceLister
from auditstream.engine.window import Planner, Progress, Window, WindowKind, WindowPolicy
from auditstream.retrying import Backoff
from auditstream.sdm.client import AuditClient, Page
from auditstream.sdm.errors import ApiError
from auditstream.sdm.registry import NANOS_PER_SECOND, StreamSpec
from auditstream.sinks.base import Envelope

log = structlog.get_logger("auditstream.poller")
MIN_PAUSE_SECONDS = 0.1  # nothing to list yet: look again no sooner than this

Clock = Callable[[], int]


@dataclass
class Batch:
    envelopes: list[Envelope]
    acks: list[tuple[str, int]]  # (key, relist-until) to remember once delivered
    records: list[Any] = field(default_factory=list)
    charge: int = 0  # bytes of the buffer budget its page holds until it is delivered


@dataclass(frozen=True)
class WindowDone:
    window: Window
    listed: int  # records the listing returned, repeats included
    # Keys it listed that another listing had claimed and not yet delivered: the window
    # completes once none of them is in flight any more.
    waits: frozenset[str] = frozenset()


class _Finished:
    """The lister has nothing more to hand over (stopped, or a backfill reached its end)."""


FINISHED = _Finished()
QueueItem = Batch | WindowDone | _Finished


@dataclass
class PollerOptions:
    poll_interval: float
    queue_batches: int
    # Windows listed ahead, a budget shared by every poller (engine.prefetch).
    ahead: AheadBudget = field(default_factory=lambda: AheadBudget(0))
    # Bytes of pages listed and not yet delivered, shared by every poller (engine.prefetch).
    buffer: BufferBudget = field(default_factory=lambda: BufferBudget(UNBOUNDED))
    # A backfill: windows are listed at once and handed over in any order (module docstring).
    any_order: bool = False
    # After the client's own retries: how long a stream waits before listing again.
    error_backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))


@dataclass
class ListedWindow:
    """What listing one window gave: how many records, and the first page of a probe that
    did not fit one page (its record times), or None; while it is listed, the keys it
    waits for and the bytes of the page being handed over."""

    records: int = 0
    probe_sample: list[int] | None = None
    waits: set[str] = field(default_factory=set)
    charge: int = 0  # taken by the page's batch, else released once the page is handed over


class StreamPoller:
    # Whether a backfill of this stream may list its windows at once and in any order.
    lists_in_any_order: ClassVar[bool] = True

    def __init__(
        self,
        spec: StreamSpec,
        client: AuditClient,
        fanout: FanOut,
        store: CheckpointStore,
        states: dict[str, StreamState],
        policy: WindowPolicy,
        normalizer: Normalizer,
        options: PollerOptions,
        stop: asyncio.Event,
        clock: Clock = time.time_ns,
        tracker: LongQueryTracker | None = None,
        on_success: asyncio.Event | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self._observer: EngineObserver = observer or NullEngineObserver()
        self.spec = spec
        self._client = client
        self._fanout = fanout
        self._store = store
        self.state = states[spec.name]
        self._policy = policy
        self._normalizer = normalizer
        self._options = options
        self._stop = stop
        self._clock = clock
        self._tracker = tracker
        self._on_success = on_success
        self._keys = DeliveredKeys(self.state.delivered)
        self._slices = SliceLister(client, spec, options.ahead, options.buffer)
        self._any_order = options.any_order and self.lists_in_any_order
        self._waiting_window: Window | None = None  # planned, listed once a slot is free
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=options.queue_batches)
        self.planner = Planner(policy, self.state.watermark_ns, self.state.final_ns)
        self._head = Progress(self.state.watermark_ns)
        self.records_delivered = 0
        self.last_success_ns: int | None = None
        self.log = log.bind(stream=spec.name)

    @property
    def finished(self) -> bool:
        return self.planner.is_finished(self.state.watermark_ns)

    async def run(self) -> None:
        """Run until stopped (live) or until the end is reached (backfill)."""
        lister = asyncio.create_task(self._list_loop(), name=f"list-{self.spec.name}")
        deliverer = asyncio.create_task(self._deliver_loop(), name=f"deliver-{self.spec.name}")
        tasks = [lister, deliverer]
        if self._tracker is not None:
            tasks.append(asyncio.create_task(self._recheck_loop(), name=f"recheck-{self.spec.name}"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise a fatal error from either side
            await deliverer
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- listing -----------------------------------------------------------------------

    def _select_new(self, records: list[Any], listed: ListedWindow | None = None) -> Batch | None:
        """The page's records not delivered or in flight yet, claimed and normalized; the
        keys found in flight go into ``listed.waits``, its charge into the batch.

        Runs once per record listed, so it works a page at a time: one ``record_facts``
        call per record, then the whole page normalized at once.
        """
        facts_of = self.spec.record_facts
        claim = self._keys.claim
        kept: list[Any] = []
        facts: list[tuple[str, int, int]] = []
        newest = 0
        for record in records:
            fact = facts_of(record)
            if fact[1] > newest:
                newest = fact[1]
            if claim(fact[0]):
                kept.append(record)
                facts.append(fact)
            elif listed is not None and self._keys.in_flight(fact[0]):
                listed.waits.add(fact[0])  # rare: records at the edges of two windows
        # The API's clock has reached it, if the API's clock stamped it (sdm.apiclock).
        self._client.clock.observe_record_time(newest, self.spec.service)
        duplicates = len(records) - len(kept)
        if duplicates:
            self._observer.duplicates_dropped(self.spec.name, duplicates)
        if not kept:
            return None
        name = self.spec.name
        events = self._normalizer.batch(kept)
        envelopes = [
            Envelope(name, key, time_ns, event)
            for (key, time_ns, _), event in zip(facts, events, strict=True)
        ]
        acks = [(key, relist_ns) for key, _, relist_ns in facts]
        charge = 0
        if listed is not None:
            charge, listed.charge = listed.charge, 0
        return Batch(envelopes, acks, kept if self._tracker is not None else [], charge)

    async def _queue_new(self, records: list[Any], listed: ListedWindow | None = None) -> int:
        """Hand the page's new records to the deliverer; how many events were queued.

        ``listed``: the window being listed, which learns the keys it must wait for and
        hands its page's charge to the batch (see :class:`ListedWindow`).
        """
        batch = self._select_new(records, listed)
        if batch is None:
            return 0
        await self._queue.put(batch)
        self._observer.queue_depth(self.spec.name, self._queue.qsize())
        return len(batch.envelopes)

    async def _list_window(self, window: Window, pages: AsyncGenerator[Page, None]) -> ListedWindow | None:
        """Queue every new record of the window; None when stopped part-way."""
        listed = ListedWindow()
        async with contextlib.aclosing(pages):
            async for page in pages:
                listed.records += len(page.records)
                listed.charge = page.size_bytes
                try:
                    await self._queue_new(page.records, listed)
                finally:
                    if listed.charge:  # no batch took it: the page is not held any more
                        self._slices.holding.release(listed.charge)
                        listed.charge = 0
                if self._stop.is_set():
                    return None
                if window.probe and page.has_more:  # more than a page: the sample sizes its successors
                    listed.probe_sample = [self.spec.record_time_ns(r) for r in page.records]
                    return listed
        return listed

    def _plan(self, plan: deque[Window], now: int) -> None:
        """Top the plan up to the windows that may be listed at once (this one and those ahead)."""
        wanted = self._slices.ahead + 1
        while len(plan) < wanted:
            window = self.planner.next_window(now, self.state.watermark_ns)
            if window is None:
                return
            plan.append(self._at_live_edge(window, now))

    def _at_live_edge(self, window: Window, now: int) -> Window:
        """A window ending at now is listed up to the API's upper time bound (sdm.apiclock)."""
        if window.kind is not WindowKind.HEAD or window.end_ns < now - self._policy.settle_ns:
            return window
        upper = self._client.clock.upper_ns()
        if upper is None or upper <= window.end_ns:
            return window
        return replace(window, list_until_ns=upper)

    def _pause_until_due(self, now: int) -> float:
        """Seconds until the head may move again, within [MIN_PAUSE, poll interval]: sweeps
        and redone ground are looked at on each wake-up, at least once per poll interval."""
        due_in = (self.planner.head_due_ns() - now) / NANOS_PER_SECOND
        return min(self._options.poll_interval, max(due_in, MIN_PAUSE_SECONDS))

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _list_loop(self) -> None:
        try:
            if self._any_order:
                await self._list_any_order()
            else:
                await self._list_windows()
        finally:
            await self._slices.discard()
        await self._queue.put(FINISHED)

    async def _list_windows(self) -> None:
        plan: deque[Window] = deque()
        failures = 0
        while not self._stop.is_set():
            now = self._clock()
            self._plan(plan, now)
            if not plan:
                if self.planner.is_finished(self.planner.head_planned):
                    break
                await self._sleep_unless_stopped(self._pause_until_due(now))
                continue
            window = plan.popleft()
            try:
                listed = await self._list_window(window, self._slices.pages(window, list(plan)))
            except ApiError as exc:
                if exc.fatal:
                    raise
                plan.appendleft(window)
                await self._slices.discard()  # listed again after the backoff: nothing skipped
                failures += 1
                await self._back_off(exc, failures)
                continue
            if listed is None:
                break
            failures = 0
            await self._listed(window, listed)

    # -- listing in any order (backfills) -----------------------------------------------

    async def _list_any_order(self) -> None:
        """List windows at once, each through, as the two budgets allow: the first window
        of the stream needs nothing, each further one a slot of ``ahead``, and every page
        room in ``buffer`` (engine.prefetch)."""
        running: dict[asyncio.Task[None], bool] = {}  # listing -> whether it holds a slot
        stopped = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                wants_slot = self._start_windows(running)
                if not running:
                    if self.planner.is_finished(self.planner.head_planned):
                        break
                    await self._sleep_unless_stopped(self._pause_until_due(self._clock()))
                    continue
                waiting: set[asyncio.Future[Any]] = {*running, stopped}
                slot_freed = self._options.ahead.when_free() if wants_slot else None
                if slot_freed is not None:
                    waiting.add(slot_freed)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if slot_freed is not None:
                    slot_freed.cancel()
                for task in [task for task in running if task.done()]:
                    if running.pop(task):
                        self._options.ahead.give_back()
                    task.result()  # a fatal error stops the stream
        finally:
            stopped.cancel()
            for task in running:
                task.cancel()
            for task, slot in running.items():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if slot:
                    self._options.ahead.give_back()

    def _start_windows(self, running: dict[asyncio.Task[None], bool]) -> bool:
        """Start listing every window the planner has and the slots allow; whether one is
        planned and waits for a slot (kept in ``_waiting_window`` until one is free)."""
        now = self._clock()
        while True:
            window = self._waiting_window
            if window is None:
                planned = self.planner.next_window(now, self.state.watermark_ns)
                if planned is None:
                    return False
                window = self._at_live_edge(planned, now)
            slot = bool(running)  # the stream's first window needs no slot
            if slot and not self._options.ahead.take():
                self._waiting_window = window
                return True
            self._waiting_window = None
            task = asyncio.create_task(
                self._list_through(window), name=f"list-{self.spec.name}-{window.end_ns}"
            )
            running[task] = slot

    async def _list_through(self, window: Window) -> None:
        """List one window through, its pages handed over as they come; after a failure
        the same window again, after a backoff (what was handed over is dropped by key)."""
        failures = 0
        while True:
            try:
                listed = await self._list_window(window, self._slices.listing(window))
                break
            except ApiError as exc:
                if exc.fatal:
                    raise
                failures += 1
                await self._back_off(exc, failures)
                if self._stop.is_set():
                    return
        if listed is None:
            return
        await self._listed(window, listed)

    async def _back_off(self, exc: ApiError, failures: int) -> None:
        """After the ``failures``-th failed listing in a row of a window, before listing it again."""
        self._observer.poll_failed(self.spec.name)
        delay = self._options.error_backoff.delay(failures)
        self.log.warning(
            "listing failed; retrying the window", error=str(exc), retry_in_seconds=round(delay, 1)
        )
        await self._sleep_unless_stopped(delay)

    async def _listed(self, window: Window, listed: ListedWindow) -> None:
        """A window listed through, in either listing mode: a probe's sample re-plans it,
        anything else completes it and goes to delivery."""
        self.last_success_ns = self._clock()
        if self._on_success is not None:
            self._on_success.set()
        if listed.probe_sample is not None:
            self.planner.redo(window, listed.probe_sample)
            return
        self.planner.completed(window, listed.records)
        await self._queue.put(WindowDone(window, listed.records, frozenset(listed.waits)))

    # -- delivery ----------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        waiting: list[WindowDone] = []  # completed listings waiting for keys another one claimed
        while True:
            item = await self._queue.get()
            self._observer.queue_depth(self.spec.name, self._queue.qsize())
            if isinstance(item, _Finished):
                return  # a window still waiting has records that were not delivered: no mark moves
            if isinstance(item, Batch):
                await self._deliver(item)
                if waiting:
                    waiting = await self._complete_ready(waiting)
            elif self._keys.any_in_flight(item.waits):
                waiting.append(item)
            else:
                await self._complete_window(item.window)

    async def _complete_ready(self, waiting: list[WindowDone]) -> list[WindowDone]:
        """Complete the waiting windows whose keys are all delivered; the others still wait."""
        still: list[WindowDone] = []
        for done in waiting:
            if self._keys.any_in_flight(done.waits):
                still.append(done)
            else:
                await self._complete_window(done.window)
        return still

    async def _deliver(self, batch: Batch) -> None:
        try:
            if batch.envelopes:  # a batch may carry only progress (replays: a session done)
                await self._fanout.deliver(self.spec.name, batch.envelopes)
        finally:
            if batch.charge:  # delivered, or never will be by this process: not held any more
                self._slices.holding.release(batch.charge)
                batch.charge = 0
        self._keys.acknowledge(batch.acks)
        changes = self._tracker.after_delivery(batch.records, self._keys) if self._tracker else None
        self.records_delivered += len(batch.envelopes)
        await self._store.commit_batch(self.spec.name, batch.acks, changes)

    async def _complete_window(self, window: Window) -> None:
        """Every batch of the window is acknowledged: the marks it proves move."""
        state = self.state
        policy = self._policy
        if window.kind is WindowKind.HEAD:
            state.watermark_ns = max(state.watermark_ns, self._head.add(window.start_ns, window.end_ns))
        final = self.planner.final_part(window)
        if final is not None:
            state.swept_ns = max(state.final_ns, self.planner.final.add(*final))
        state.swept_ns = min(state.final_ns, state.watermark_ns)
        # No listing starts before the sweep mark minus the tail (or an edge): older keys go.
        prune_before = state.final_ns - max(policy.tail_ns, NANOS_PER_SECOND)
        self._keys.prune(prune_before)
        expired: list[str] = []
        if self._tracker is not None:
            # Measured against the watermark, not the wall clock: while catching up days of
            # history, a session's completion still lies ahead of the cursor.
            expired = self._tracker.expire(state.watermark_ns)
        await self._store.commit_progress(self.spec.name, state, prune_before, expired)

    # -- long-running queries ------------------------------------------------------------

    async def _recheck_loop(self) -> None:
        """Look for completion records far behind the cursor (see engine.longqueries)."""
        assert self._tracker is not None
        tracker = self._tracker
        while not self._stop.is_set():
            await self._sleep_unless_stopped(tracker.recheck_interval)
            if self._stop.is_set():
                return
            for window in tracker.recheck_windows():
                try:
                    async for page in self._client.pages(self.spec, window.start_ns, window.end_ns):
                        found = tracker.completions_in(page.records, self._keys)
                        queued = await self._queue_new(found)
                        if queued:
                            tracker.count_found(queued)
                except ApiError as exc:
                    if exc.fatal:
                        raise
                    self._observer.poll_failed(self.spec.name)
                    self.log.warning("re-check of open long-running queries failed", error=str(exc))
                    break
            tracker.round_done()
