"""One poller per stream: plan windows, list them, drop what was delivered, deliver, checkpoint.

Two tasks per stream joined by a bounded queue: the lister plans windows (engine.window) and
walks their pages, some of them listed ahead (engine.prefetch); the deliverer hands batches to
the fan-out and, once every batch of a window is acknowledged, moves the stream's marks. The
queue bound is the backpressure: a sink that is down stalls its streams' listing instead of
filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.dedupe import DeliveredKeys
from auditstream.engine.fanout import FanOut
from auditstream.engine.longqueries import LongQueryTracker
from auditstream.engine.normalize import Normalizer
from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.engine.prefetch import AheadBudget, SliceLister
from auditstream.engine.window import Planner, Progress, Window, WindowKind, WindowPolicy
from auditstream.retrying import Backoff
from auditstream.sdm.client import AuditClient
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


@dataclass(frozen=True)
class WindowDone:
    window: Window
    listed: int  # records the listing returned, repeats included


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
    # After the client's own retries: how long a stream waits before listing again.
    error_backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))


@dataclass
class _Listed:
    """What listing one window gave: how many records, and the first page of a probe that
    did not fit one page (its record times), or None."""

    records: int = 0
    probe_sample: list[int] | None = None


class StreamPoller:
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
        self._slices = SliceLister(client, spec, options.ahead)
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

    def _select_new(self, records: list[Any]) -> Batch | None:
        """The page's records not delivered or in flight yet, claimed and normalized.

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
        return Batch(envelopes, acks, kept if self._tracker is not None else [])

    async def _queue_new(self, records: list[Any]) -> int:
        """Hand the page's new records to the deliverer; how many events were queued."""
        batch = self._select_new(records)
        if batch is None:
            return 0
        await self._queue.put(batch)
        self._observer.queue_depth(self.spec.name, self._queue.qsize())
        return len(batch.envelopes)

    async def _list_window(self, window: Window, upcoming: list[Window]) -> _Listed | None:
        """Queue every new record of the window; None when stopped part-way."""
        listed = _Listed()
        async with contextlib.aclosing(self._slices.pages(window, upcoming)) as pages:
            async for page in pages:
                listed.records += len(page.records)
                await self._queue_new(page.records)
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
                listed = await self._list_window(window, list(plan))
            except ApiError as exc:
                if exc.fatal:
                    raise
                plan.appendleft(window)
                await self._slices.discard()  # listed again after the backoff: nothing skipped
                self._observer.poll_failed(self.spec.name)
                failures += 1
                delay = self._options.error_backoff.delay(failures)
                self.log.warning(
                    "listing failed; retrying the window", error=str(exc), retry_in_seconds=round(delay, 1)
                )
                await self._sleep_unless_stopped(delay)
                continue
            if listed is None:
                break
            failures = 0
            self.last_success_ns = self._clock()
            if self._on_success is not None:
                self._on_success.set()
            if listed.probe_sample is not None:
                self.planner.redo(window, listed.probe_sample)
                continue
            self.planner.completed(window, listed.records)
            await self._queue.put(WindowDone(window, listed.records))

    # -- delivery ----------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        while True:
            item = await self._queue.get()
            self._observer.queue_depth(self.spec.name, self._queue.qsize())
            if isinstance(item, _Finished):
                return
            if isinstance(item, Batch):
                await self._deliver(item)
            else:
                await self._complete_window(item.window)

    async def _deliver(self, batch: Batch) -> None:
        if batch.envelopes:  # a batch may carry only progress (replays: a session done)
            await self._fanout.deliver(self.spec.name, batch.envelopes)
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
