"""The engine against the emulator with fake sinks: routing, acknowledgement before the
checkpoint moves, backpressure from a stalled sink, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.engine import Engine, RunPlan
from auditstream.sinks.base import Envelope, ProbeResult, SinkFatalError, SinkHealth, SinkState
from tests.e2e.support import daemon_config
from tests.helpers import async_wait_until


class FakeSink:
    """Records what it is sent; can be stalled (a down receiver) or made to fail fatally."""

    def __init__(self, name: str, streams: Sequence[str] = ("*",)) -> None:
        self.name = name
        self._streams = set(streams)
        self.received: list[Envelope] = []
        self.open = asyncio.Event()
        self.open.set()
        self.fail_fatally = 0
        self.calls = 0
        self._health = SinkHealth()

    def routes(self, stream: str) -> bool:
        return "*" in self._streams or stream in self._streams

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Envelope]) -> None:
        self.calls += 1
        if self.fail_fatally:
            self.fail_fatally -= 1
            self._health.mark(SinkState.FAILED, "token rejected")
            raise SinkFatalError("token rejected")
        await self.open.wait()
        self.received.extend(batch)
        self._health.mark(SinkState.OK)

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "fake")

    def health(self) -> SinkHealth:
        return self._health

    async def close(self) -> None:
        return None

    def keys(self, stream: str | None = None) -> list[str]:
        return [e.key for e in self.received if stream is None or e.stream == stream]


def engine_with(
    emu: Emulator,
    tmp_path,
    sinks,
    streams=("activities", "queries"),
    page_size=100,
    failure_pause="0.2s",
    **stream_settings,
) -> Engine:
    config = daemon_config(
        emu,
        tmp_path,
        streams={"include": list(streams), **stream_settings},
        source={"page_size": page_size},
        extra={"engine": {"sink_failure_pause": failure_pause}},
    )
    plan = RunPlan(streams=list(streams), checkpoint_path=config.checkpoint.path)
    return Engine(config, plan, sinks=sinks)


def truth(emu: Emulator, stream: str) -> set[str]:
    return {key for key, _ in emu.truth(stream)}


async def test_routing_sends_each_stream_only_where_configured(tmp_path):
    async with Emulator(EmulatorOptions(records=120)) as emu:
        everything, only_queries = FakeSink("all"), FakeSink("q", ["queries"])
        engine = engine_with(emu, tmp_path, [everything, only_queries])
        task = asyncio.create_task(engine.run())
        await async_wait_until(
            lambda: set(only_queries.keys()) == truth(emu, "queries") and len(everything.received) == 240, 30
        )
        engine.stop.set()
        await task
    assert set(everything.keys("activities")) == truth(emu, "activities")
    assert only_queries.keys("activities") == []


async def test_a_stalled_sink_holds_back_its_streams_with_bounded_memory_and_loses_nothing(tmp_path):
    async with Emulator(EmulatorOptions(records=3000)) as emu:
        healthy, stalled = FakeSink("healthy", ["queries"]), FakeSink("stalled", ["activities"])
        stalled.open.clear()
        engine = engine_with(emu, tmp_path, [healthy, stalled], page_size=50, slice="6h")
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: set(healthy.keys()) == truth(emu, "queries"), 30, "queries delivered")
        activities = next(p for p in engine.pollers if p.spec.name == "activities")
        watermark = activities.state.watermark_ns
        await async_wait_until(lambda: activities._queue.full(), 10, "the activities queue to fill")
        requests = emu.stats.requests_total["activities"]
        # Backpressure: while the sink is down, listing stops at the queue bound. The clock is
        # the queries stream, polling on every poll_interval: three more of its polls, and
        # activities has listed at most the page it was holding.
        polls = emu.stats.requests_total["queries"]
        await async_wait_until(lambda: emu.stats.requests_total["queries"] >= polls + 3, 10, "queries polls")
        assert emu.stats.requests_total["activities"] - requests <= 1
        assert activities._queue.qsize() <= engine.config.engine.queue_batches
        assert activities.state.watermark_ns == watermark, "no checkpoint progress without acknowledgement"
        stalled.open.set()
        await async_wait_until(lambda: set(stalled.keys()) == truth(emu, "activities"), 30, "recovery")
        engine.stop.set()
        await task
    assert len(stalled.keys()) == len(set(stalled.keys()))


def saved_state(path: Path, stream: str, copy: Path) -> StreamState | None:
    """What a restart would read from the checkpoint right now, without disturbing the daemon.

    A consistent snapshot (SQLite's online backup, from a read-only connection) read by the
    store's own ``load``: the test sees exactly what a kill at this instant would leave,
    whatever the schema looks like.
    """
    copy.unlink(missing_ok=True)
    with (
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    store = CheckpointStore(copy)
    try:
        return store.load().get(stream)
    finally:
        store.close()


async def test_checkpoint_moves_only_after_every_routed_sink_acknowledged(tmp_path):
    """Sampled mid-outage: while one of two routed sinks keeps failing, the saved checkpoint
    holds neither the batch's keys nor a moved watermark, though the other sink has it."""
    async with Emulator(EmulatorOptions(records=50)) as emu:
        fast, failing = FakeSink("fast"), FakeSink("failing")
        failing.fail_fatally = 1_000_000  # until the test says otherwise
        engine = engine_with(emu, tmp_path, [fast, failing], streams=("activities",), failure_pause="50ms")
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.pollers, 10)
        start = engine.pollers[0].state.watermark_ns
        await async_wait_until(lambda: fast.received and failing.calls >= 3, 10, "the outage under way")
        during = saved_state(engine.plan.checkpoint_path, "activities", tmp_path / "during.db")
        assert during is not None, "the stream's row is saved before its first batch"
        assert during.delivered == {}, "keys committed before every routed sink acknowledged"
        assert during.watermark_ns == start, "the watermark moved before every routed sink acknowledged"
        failing.fail_fatally = 0
        await async_wait_until(
            lambda: set(failing.keys()) == truth(emu, "activities"), 30, "the failing sink recovers"
        )

        def saved_past_start() -> bool:
            after = saved_state(engine.plan.checkpoint_path, "activities", tmp_path / "after.db")
            return after is not None and after.watermark_ns > start

        await async_wait_until(saved_past_start, 10, "the checkpoint saved once every sink acknowledged")
        engine.stop.set()
        await task
    assert fast.keys().count(fast.keys()[0]) == 1, "the sink that had the batch was not sent it again"


async def test_stop_flushes_in_flight_batches_so_a_restart_sends_nothing_twice(tmp_path):
    async with Emulator(EmulatorOptions(records=500, latency_ms=20)) as emu:
        sink = FakeSink("s")
        first = engine_with(emu, tmp_path, [sink], streams=("activities",), page_size=20)
        task = asyncio.create_task(first.run())
        await async_wait_until(lambda: len(sink.received) > 0, 20)
        first.stop.set()
        await asyncio.wait_for(task, 15)
        delivered_before_restart = len(sink.received)
        assert delivered_before_restart < len(truth(emu, "activities")), "stopped part-way"
        second = engine_with(emu, tmp_path, [sink], streams=("activities",), page_size=20)
        task = asyncio.create_task(second.run())
        await async_wait_until(lambda: set(sink.keys()) == truth(emu, "activities"), 30)
        second.stop.set()
        await task
    assert len(sink.keys()) == len(set(sink.keys())), "a clean stop and restart sends no duplicates"


@pytest.mark.parametrize("bad", ["corrupt"])
async def test_corrupt_checkpoint_stops_the_engine_before_any_delivery(tmp_path, bad):
    async with Emulator(EmulatorOptions(records=10)) as emu:
        sink = FakeSink("s")
        engine = engine_with(emu, tmp_path, [sink])
        engine.plan.checkpoint_path.parent.mkdir(parents=True)
        engine.plan.checkpoint_path.write_text("{")
        from auditstream.engine.checkpoint import CheckpointError

        with pytest.raises(CheckpointError, match="corrupt"):
            await engine.run()
    assert sink.received == []


def test_a_record_that_cannot_be_normalized_is_sent_raw_not_dropped(monkeypatch):
    import base64 as b64

    from strongdm import activities_pb2

    from auditstream.engine import normalize
    from auditstream.sdm.registry import STREAMS

    def broken(spec, record):
        raise ValueError("unexpected field")

    record = activities_pb2.Activity(id="a-1", description="x")
    normalizer = normalize.Normalizer(STREAMS["activities"])
    monkeypatch.setattr(normalizer, "_convert", lambda record: broken(None, record))
    event = normalizer(record)
    assert event["id"] == "a-1" and event["logType"] == "activities"
    assert "unexpected field" in event["normalizationError"]
    assert activities_pb2.Activity.FromString(b64.b64decode(event["rawProtobuf"])) == record


def test_keep_credentials_reaches_the_events():
    from strongdm import resources_history_pb2

    from auditstream.engine.normalize import Normalizer
    from auditstream.sdm.registry import STREAMS

    record = resources_history_pb2.ResourceHistory(activity_id="act")
    record.resource.postgres.id = "rs-1"
    record.resource.postgres.password = "hunter2-db-password"
    spec = STREAMS["resources_history"]
    assert "hunter2-db-password" not in str(Normalizer(spec)(record))
    assert "hunter2-db-password" in str(Normalizer(spec, keep_credentials=True)(record))


def test_a_page_with_one_record_that_cannot_be_normalized_keeps_every_other_record_whole():
    from strongdm import activities_pb2

    from auditstream.engine.normalize import Normalizer
    from auditstream.formats.redaction import RedactionRule, Redactor
    from auditstream.sdm.registry import STREAMS

    spec = STREAMS["activities"]
    redactor = Redactor([RedactionRule(field="actorEmail", action="drop")], None)
    normalizer = Normalizer(spec, redactor)
    convert = normalizer._convert

    def fails_on_bad(record):
        if record.id == "bad":
            raise ValueError("unexpected field")
        return convert(record)

    normalizer._convert = fails_on_bad
    page = [activities_pb2.Activity(id=i, verb="user deleted") for i in ("a-1", "bad", "a-2")]
    for record in page:
        record.actor.email = "alice@example.com"
    events = normalizer.batch(page)
    assert [event["id"] for event in events] == ["a-1", "bad", "a-2"]
    assert "normalizationError" in events[1] and "rawProtobuf" in events[1]
    for whole in (events[0], events[2]):
        assert "normalizationError" not in whole and whole["activity"] == "user deleted"
    assert all("actorEmail" not in event for event in events), "redaction applies on both paths"
    assert normalizer.batch(page[::2]) == [events[0], events[2]], "a page without failures: same events"
