"""Backfills list a stream's windows at once and deliver them in any order: the marks still
move only over contiguous, completed ground, a record two windows share is never passed by a
mark before it is delivered, and what is held ahead stays within ``[engine] buffer_bytes``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from strongdm import activities_pb2

from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.engine import engine as engine_module
from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.engine import Engine, RunPlan, client_settings
from auditstream.engine.fanout import FanOut
from auditstream.engine.normalize import Normalizer
from auditstream.engine.poller import ListedWindow, PollerOptions, StreamPoller, WindowDone
from auditstream.engine.prefetch import BufferBudget
from auditstream.engine.window import Window, WindowPolicy
from auditstream.sdm.apiclock import ApiClock
from auditstream.sdm.client import AuditClient, Page
from auditstream.sdm.registry import NANOS_PER_SECOND, STREAMS, StreamSpec
from tests.e2e.support import daemon_config
from tests.engine.test_delivery import FakeSink
from tests.helpers import async_wait_until

S = NANOS_PER_SECOND
DAY = 86_400 * S


class GatedClient(AuditClient):
    """Listings whose window starts within ``held_back`` wait for ``release``: an earlier window
    that is slow while later ones are listed and delivered."""

    def __init__(self, *args: Any, held_back: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_back = held_back
        self.release = asyncio.Event()
        self.waiting: list[int] = []

    async def pages(
        self, spec: StreamSpec, after_ns: int, before_ns: int, extra_filter: str = "", *, urgent: bool = True
    ) -> AsyncGenerator[Page, None]:
        low, high = self.held_back
        if low <= after_ns < high:
            self.waiting.append(after_ns)
            await self.release.wait()
        async for page in super().pages(spec, after_ns, before_ns, extra_filter, urgent=urgent):
            yield page


def backfill_plan(tmp_path: Path, since: int, until: int) -> RunPlan:
    return RunPlan(
        streams=["activities"],
        checkpoint_path=tmp_path / "backfill.db",
        backfill_from_ns=since,
        backfill_to_ns=until,
    )


async def test_a_backfill_stopped_with_later_windows_delivered_resumes_from_the_earlier_one(tmp_path):
    """Kill a backfill while a window is still being listed and later ones are delivered: the
    checkpoint stays before the unfinished window, and the next run delivers everything."""
    async with Emulator(EmulatorOptions(seed=31, records=6_000, spread_seconds=DAY / S)) as emu:
        config = daemon_config(emu, tmp_path, source={"page_size": 100})
        truth = dict(emu.truth("activities"))
        times = sorted(truth.values())
        since, until = times[0] - S, times[-1] + S
        # Windows hold ~800 records here: whichever starts in the middle tenth is held back.
        held_back = (times[len(times) * 4 // 10], times[len(times) // 2])
        client = GatedClient(client_settings(config), held_back=held_back)
        sink = FakeSink("s")
        first = Engine(config, backfill_plan(tmp_path, since, until), client=client, sinks=[sink])
        run = asyncio.create_task(first.run())
        late = {key for key, t in truth.items() if t >= times[len(times) * 8 // 10]}
        await async_wait_until(lambda: late <= set(sink.keys()), 20, "the last fifth delivered")
        assert client.waiting, "a window in the middle was held back all along"
        run.cancel()  # the process dies: no drain, no clean stop
        await asyncio.gather(run, return_exceptions=True)
        await client.close()
        held = min(client.waiting)  # the held-back window's after bound: it reaches an edge back
        saved = CheckpointStore(tmp_path / "backfill.db").load()["activities"]
        assert saved.watermark_ns <= held + S, "the mark never passed the window that was not done"
        delivered = set(sink.keys())
        assert all(key in delivered for key, t in truth.items() if t < saved.watermark_ns), (
            "every record before the mark was delivered"
        )
        assert not all(key in delivered for key, t in truth.items() if t < times[len(times) // 2]), (
            "and some after it were not"
        )
        before_resume = len(sink.received)

        second = Engine(config, backfill_plan(tmp_path, since, until), sinks=[sink])
        await asyncio.wait_for(second.run(), 30)
    assert set(sink.keys()) == set(truth), "nothing lost"
    repeats = len(sink.received) - len(set(sink.keys()))
    assert repeats <= 2 * 100, "what later windows delivered is not sent again (a page or two may be)"
    assert len(sink.received) > before_resume


# -- a record two windows share ------------------------------------------------------------------


def activity(key: str, time_ns: int) -> Any:
    record = activities_pb2.Activity(id=key, description="x")
    record.completed_at.seconds, record.completed_at.nanos = divmod(time_ns, S)
    return record


class ClockOnly:
    """All the poller asks of a client outside listing: the API's clock."""

    def __init__(self) -> None:
        self.clock = ApiClock()


def poller_for(tmp_path: Path, sink: FakeSink, start_ns: int, end_ns: int) -> StreamPoller:
    spec = STREAMS["activities"]
    states = {spec.name: StreamState(watermark_ns=start_ns, end_ns=end_ns)}
    store = CheckpointStore(tmp_path / "c.db")
    store.load()
    policy = WindowPolicy.from_seconds(
        overlap=300, settle=0, tail=10, poll=30, page_size=100, floor_ns=start_ns, end_ns=end_ns
    )
    options = PollerOptions(poll_interval=30, queue_batches=4, any_order=True)
    client: Any = ClockOnly()
    return StreamPoller(
        spec, client, FanOut([sink]), store, states, policy, Normalizer(spec), options, asyncio.Event()
    )


async def test_a_window_sharing_a_record_another_has_claimed_completes_only_once_it_is_delivered(tmp_path):
    """Windows overlap at their edges. Listed in any order, the later window may claim a shared
    record first and hand it over after the earlier window is done (its queue was full); the
    earlier window, complete and contiguous, must not move the mark over that record until it
    is delivered: a crash in between would lose it."""
    start = 1_000 * S
    earlier, later = Window(start, start + 10 * S), Window(start + 9 * S, start + 20 * S)
    sink = FakeSink("s")
    poller = poller_for(tmp_path, sink, start, start + 20 * S)
    shared = activity("shared", start + 9 * S + S // 2)
    deliverer = asyncio.create_task(poller._deliver_loop())

    later_listing = ListedWindow()
    claimed = poller._select_new([shared, activity("after", start + 15 * S)], later_listing)
    assert claimed is not None  # claimed, not handed over yet
    earlier_listing = ListedWindow()
    await poller._queue_new([activity("before", start + S), shared], earlier_listing)
    assert earlier_listing.waits == {"shared"}, "the earlier window saw the record in flight"
    await poller._queue.put(WindowDone(earlier, 2, frozenset(earlier_listing.waits)))
    await async_wait_until(lambda: sink.keys() == ["before"] and poller._queue.empty(), 5, "the deliverer")
    assert poller.state.watermark_ns == start, "not past the shared record while it is in flight"

    await poller._queue.put(claimed)
    await async_wait_until(lambda: poller.state.watermark_ns == earlier.end_ns, 5, "the mark to move")
    await poller._queue.put(WindowDone(later, 2, frozenset(later_listing.waits)))
    await async_wait_until(lambda: poller.state.watermark_ns == later.end_ns, 5, "the later window")
    assert sorted(sink.keys()) == ["after", "before", "shared"]
    deliverer.cancel()
    await asyncio.gather(deliverer, return_exceptions=True)
    poller._store.close()


# -- the byte budget -----------------------------------------------------------------------------


class RecordingBudget(BufferBudget):
    """A BufferBudget that remembers the most it ever held."""

    most = 0
    instances: list[RecordingBudget] = []

    def __init__(self, limit: int) -> None:
        self._held = 0
        super().__init__(limit)
        RecordingBudget.instances.append(self)

    @property  # type: ignore[override]
    def held(self) -> int:
        return self._held

    @held.setter
    def held(self, value: int) -> None:
        self._held = value
        RecordingBudget.most = max(RecordingBudget.most, value)


async def test_what_a_backfill_holds_ahead_of_a_slow_sink_stays_within_the_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "BufferBudget", RecordingBudget)
    streams = ["activities", "queries"]
    async with Emulator(EmulatorOptions(seed=32, records=3_000, latency_ms=5)) as emu:
        limit = 60_000  # a page of 100 activities is ~40 kB on the wire, of queries ~70 kB
        config = daemon_config(
            emu, tmp_path, source={"page_size": 100}, extra={"engine": {"buffer_bytes": limit}}
        )
        now = time.time_ns()
        plan = RunPlan(streams, tmp_path / "b.db", backfill_from_ns=now - 9 * DAY, backfill_to_ns=now)
        sink = FakeSink("s")
        sink.open.clear()
        engine = Engine(config, plan, sinks=[sink])
        run = asyncio.create_task(engine.run())
        instances = RecordingBudget.instances
        await async_wait_until(lambda: instances and instances[-1]._waiters, 20, "a listing to wait for room")
        budget = RecordingBudget.instances[-1]  # saturated: a listing waits for room
        assert budget.held <= limit + 2 * 80_000, "the bound, and at most a page per stream beyond it"
        sink.open.set()
        await asyncio.wait_for(run, 60)
    assert set(sink.keys()) == {k for s in streams for k, _ in emu.truth(s)}
    assert RecordingBudget.most <= limit + 2 * 80_000
    assert budget.held == 0, "every page released once delivered"
