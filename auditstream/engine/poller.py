"""One poller per stream: list windows, drop what was delivered, deliver, then checkpoint.

Two tasks per stream joined by a bounded queue: the lister walks the pages of each window
and the deliverer hands batches to the fan-out. The queue bound is the backpressure: a sink
that is down stalls its streams' listing instead of filling memory. The watermark moves to a
window's end only after every batch of that window has been acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.dedupe import DeliveredKeys
from auditstream.engine.fanout import FanOut
from auditstream.engine.longqueries import LongQueryTracker
from auditstream.engine.normalize import Normalizer
from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.engine.prefetch import AheadBudget, SliceLister, slices_ahead
from auditstream.engine.window import Window, WindowPolicy, is_finished, next_window
from auditstream.retrying import Backoff
from auditstream.sdm.client import AuditClient
from auditstream.sdm.errors import ApiError
from auditstream.sdm.registry import NANOS_PER_SECOND, StreamSpec
from auditstream.sinks.base import Envelope

log = structlog.get_logger("auditstream.poller")

Clock = Callable[[], int]


@dataclass
class Batch:
    envelopes: list[Envelope]
    acks: list[tuple[str, int]]  # (key, relist-until) to remember once delivered
    records: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class WindowDone:
    window: Window


class _Finished:
    """The lister has nothing more to hand over (stopped, or a backfill reached its end)."""


FINISHED = _Finished()
QueueItem = Batch | WindowDone | _Finished


@dataclass
class PollerOptions:
    poll_interval: float
    queue_batches: int
    # Slices listed ahead while catching up, a budget shared by every poller (engine.prefetch).
    ahead: AheadBudget = field(default_factory=lambda: AheadBudget(0))
    # After the client's own retries: how long a stream waits before listing again.
    error_backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))


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
        self._states = states
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
        self.records_delivered = 0
        self.last_success_ns: int | None = None
        self.log = log.bind(stream=spec.name)

    @property
    def finished(self) -> bool:
        return is_finished(self.state.watermark_ns, self._policy)

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
        self._client.clock.observe_record_time(newest)  # the API's clock has reached it
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

    async def _list_window(self, window: Window) -> bool:
        """Queue every new record of the window; False when stopped part-way."""
        upcoming = slices_ahead(window, self._clock(), self._policy, self._slices.ahead)
        async with contextlib.aclosing(self._slices.pages(window, upcoming)) as pages:
            async for page in pages:
                batch = self._select_new(page.records)
                if batch is not None:
                    await self._queue.put(batch)
                    self._observer.queue_depth(self.spec.name, self._queue.qsize())
                if self._stop.is_set():
                    return False
        return True

    def _at_live_edge(self, window: Window | None, now: int) -> Window | None:
        """A window ending at now is listed up to the API's upper time bound (sdm.apiclock)."""
        if window is None or window.end_ns < now - self._policy.settle_ns:
            return window
        upper = self._client.clock.upper_ns()
        if upper is None or upper <= window.end_ns:
            return window
        return Window(window.start_ns, window.end_ns, upper)

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
        listed_to = self.state.watermark_ns
        failures = 0
        while not self._stop.is_set():
            now = self._clock()
            window = self._at_live_edge(next_window(listed_to, now, self._policy), now)
            if window is None:
                if is_finished(listed_to, self._policy):
                    break
                await self._sleep_unless_stopped(self._options.poll_interval)
                continue
            try:
                complete = await self._list_window(window)
            except ApiError as exc:
                if exc.fatal:
                    raise
                await self._slices.discard()  # listed again after the backoff: nothing skipped
                self._observer.poll_failed(self.spec.name)
                failures += 1
                delay = self._options.error_backoff.delay(failures)
                self.log.warning(
                    "listing failed; retrying the window", error=str(exc), retry_in_seconds=round(delay, 1)
                )
                await self._sleep_unless_stopped(delay)
                continue
            if not complete:
                break
            failures = 0
            self.last_success_ns = self._clock()
            if self._on_success is not None:
                self._on_success.set()
            await self._queue.put(WindowDone(window))
            listed_to = window.end_ns
            caught_up = window.end_ns >= self._clock() - self._policy.settle_ns - NANOS_PER_SECOND
            if caught_up and not is_finished(listed_to, self._policy):
                await self._sleep_unless_stopped(self._options.poll_interval)

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
        await self._fanout.deliver(self.spec.name, batch.envelopes)
        self._keys.acknowledge(batch.acks)
        if self._tracker is not None:
            self._tracker.after_delivery(batch.records, self._keys)
        self.records_delivered += len(batch.envelopes)
        await self._store.save(self._states)

    async def _complete_window(self, window: Window) -> None:
        self.state.watermark_ns = max(self.state.watermark_ns, window.end_ns)
        self._keys.prune(self.state.watermark_ns - self._policy.overlap_ns)
        if self._tracker is not None:
            # Measured against the watermark, not the wall clock: while catching up days of
            # history, a session's completion still lies ahead of the cursor.
            self._tracker.expire(self.state.watermark_ns)
        await self._store.save(self._states)

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
                        batch = self._select_new(found)
                        if batch is not None:
                            tracker.count_found(len(batch.envelopes))
                            await self._queue.put(batch)
                except ApiError as exc:
                    if exc.fatal:
                        raise
                    self._observer.poll_failed(self.spec.name)
                    self.log.warning("re-check of open long-running queries failed", error=str(exc))
                    break
            tracker.round_done()
