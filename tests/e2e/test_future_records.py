"""Records from the future: a gateway whose clock runs fast stamps queries ahead of the API's
clock. They must not move any other stream's "now" (sdm.apiclock).

Before record times were kept per source and capped at the reset bound, one such query
raised the shared lower bound: every stream's head ran as far ahead, and the on-time
activities stamped in that span reached the sink only through the sweep (measured: p99
122 s with a 120 s overlap, a gateway 30 s fast), or never when the overlap was shorter
than the skew.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from strongdm import activities_pb2, queries_pb2

from auditstream.emulator import Emulator, EmulatorOptions, ResetAt
from auditstream.engine.engine import Engine, RunPlan
from auditstream.sinks.base import Envelope, ProbeResult, SinkHealth
from tests.e2e.support import daemon_config
from tests.helpers import async_wait_until

S = 1_000_000_000
POLL_SECONDS = 1.0
GATEWAY_AHEAD_NS = 30 * S
TRAFFIC_SECONDS = 20.0
ACTIVITY_EVERY_SECONDS = 0.25
QUERY_EVERY = 8  # activities per future-stamped query: one every 2 s
ALLOWED_DELAY_NS = int((POLL_SECONDS + 10) * S)


class TimedSink:
    """Remembers when each key arrived (wall clock, as the emulator stamps visibility)."""

    name = "timed"

    def __init__(self) -> None:
        self.arrived: dict[str, int] = {}

    def routes(self, stream: str) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Envelope]) -> None:
        now = time.time_ns()
        for envelope in batch:
            self.arrived.setdefault(envelope.key, now)

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "timed")

    def health(self) -> SinkHealth:
        return SinkHealth()

    async def close(self) -> None:
        return None


def activity(record_id: str, at_ns: int) -> activities_pb2.Activity:
    record = activities_pb2.Activity(id=record_id, verb="user added")
    record.completed_at.FromNanoseconds(at_ns)
    return record


def query_from_a_fast_gateway(record_id: str, now_ns: int) -> queries_pb2.Query:
    """A completed query whose gateway stamped both its times 30 s ahead of the API."""
    record = queries_pb2.Query(id=record_id, query_category="postgres", query_body="select 1")
    record.timestamp.FromNanoseconds(now_ns + GATEWAY_AHEAD_NS)
    record.completed_at.FromNanoseconds(now_ns + GATEWAY_AHEAD_NS)
    return record


def percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)] / S


@pytest.mark.parametrize("reset_at", list(ResetAt))
async def test_queries_stamped_by_a_fast_gateway_do_not_delay_on_time_activities(tmp_path, reset_at):
    """Activities inserted (visible at once) every 250 ms for 20 s while a gateway 30 s fast
    logs a query every 2 s: each activity reaches the sink within a poll interval and 10 s
    of becoming visible, under either reading of ``reset_at``; every query arrives too.
    The overlap (60 s) is above the skew, so the old code delayed them rather than lost them."""
    options = EmulatorOptions(records=0, streams=("activities", "queries"), reset_at=reset_at)
    async with Emulator(options) as emu:
        sink = TimedSink()
        config = daemon_config(
            emu,
            tmp_path,
            streams={
                "include": ["activities", "queries"],
                "poll_interval": f"{POLL_SECONDS:g}s",
                "overlap": "60s",
                "tail": "5s",
                "settle": "0s",
            },
        )
        plan = RunPlan(streams=["activities", "queries"], checkpoint_path=config.checkpoint.path)
        engine = Engine(config, plan, sinks=[sink])
        task = asyncio.create_task(engine.run())
        try:
            await async_wait_until(lambda: engine.first_poll.is_set() or task.done(), 30, "the first poll")
            visible: dict[str, int] = {}
            queries: set[str] = set()
            started = time.monotonic()
            count = 0
            while time.monotonic() - started < TRAFFIC_SECONDS:  # the traffic's pace, not a wait
                now = time.time_ns()
                visible[emu.insert("activities", activity(f"a-{count}", now))] = now
                if count % QUERY_EVERY == 0:
                    queries.add(emu.insert("queries", query_from_a_fast_gateway(f"q-{count}", now)))
                count += 1
                await asyncio.sleep(ACTIVITY_EVERY_SECONDS)
            last = max(visible.values())
            await async_wait_until(
                lambda: visible.keys() <= sink.arrived.keys() or time.time_ns() > last + ALLOWED_DELAY_NS,
                ALLOWED_DELAY_NS / S + 5,
                "every activity, or the allowed delay of the last one",
            )
            await async_wait_until(
                lambda: queries <= sink.arrived.keys(),
                (GATEWAY_AHEAD_NS + ALLOWED_DELAY_NS) / S,
                "the queries of the fast gateway (listed once the API's clock reaches their time)",
            )
        finally:
            engine.stop.set()
            await asyncio.wait_for(task, 30)
    delays = [sink.arrived[key] - at for key, at in visible.items() if key in sink.arrived]
    late = sorted(
        (round((sink.arrived.get(key, time.time_ns()) - at) / S, 1), key)
        for key, at in visible.items()
        if sink.arrived.get(key, at + ALLOWED_DELAY_NS + 1) - at > ALLOWED_DELAY_NS
    )
    assert not late, (
        f"{len(late)} of {len(visible)} on-time activities later than {ALLOWED_DELAY_NS / S:g}s "
        f"(p50 {percentile(delays, 0.5):.1f}s, p99 {percentile(delays, 0.99):.1f}s, "
        f"{len(visible) - len(delays)} not delivered), e.g. {late[-3:]}"
    )
