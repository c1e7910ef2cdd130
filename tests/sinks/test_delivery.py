"""The shared machinery with a scripted in-memory transport: batching, coalescing, ordering,
retry, Retry-After, health, fatal errors, dead letters, cancellation and close."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pytest
import tenacity

from auditstream.retrying import MAX_ASKED_DELAY, Backoff
from auditstream.sinks import retry as retry_module
from auditstream.sinks.base import (
    Envelope,
    ProbeResult,
    RetrySettings,
    SinkError,
    SinkFatalError,
    SinkSettingsBase,
    SinkState,
)
from auditstream.sinks.delivery import DeliverySink, Record, WriteResult, send_in_parts
from auditstream.sinks.http_client import retry_after_seconds
from auditstream.sinks.retry import RetriesExhausted, RetryPolicy, TransientError
from tests.helpers import async_wait_until
from tests.sinks.conftest import FAST_RETRY, envelopes


class FakeSettings(SinkSettingsBase):
    type: Literal["fake"] = "fake"


Action = BaseException | WriteResult | None


class FakeTransport:
    def __init__(self, max_in_flight: int = 1) -> None:
        self.max_in_flight = max_in_flight
        self.requests: list[list[str]] = []
        self.script: deque[Action] = deque()
        self.gate: asyncio.Event | None = None
        self.active_streams: list[str] = []
        self.overlaps = 0
        self.closed = False
        self.encoded = 0  # DeliverySink.send queues an event right after encoding it
        self.written_at: list[float] = []
        # When set, the receiver's answer to every request (the script is then not read).
        self.answer: Callable[[Sequence[Record]], WriteResult] | None = None

    def encode(self, envelope: Envelope) -> bytes:
        if envelope.event.get("unencodable"):
            raise TypeError("cannot serialise")
        self.encoded += 1
        return json.dumps(envelope.event).encode()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "fake")

    async def write(self, records: Sequence[Record]) -> WriteResult:
        streams = {r.envelope.stream for r in records}
        if streams & set(self.active_streams):
            self.overlaps += 1
        self.active_streams.extend(streams)
        try:
            self.requests.append([r.envelope.key for r in records])
            self.written_at.append(time.monotonic())
            if self.gate is not None:
                await self.gate.wait()
            if self.answer is not None:
                return self.answer(records)
            action = self.script.popleft() if self.script else None
            if isinstance(action, BaseException):
                raise action
            return action or WriteResult()
        finally:
            for stream in streams:
                self.active_streams.remove(stream)


class Observer:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.retries: list[str] = []
        self.dead: list[int] = []
        self.states: list[SinkState] = []

    def request_sent(self, sink: str, events: int, nbytes: int, seconds: float) -> None:
        self.sent.append(events)

    def retried(self, sink: str, error: str) -> None:
        self.retries.append(error)

    def dead_lettered(self, sink: str, count: int) -> None:
        self.dead.append(count)

    def health_changed(self, sink: str, state: SinkState) -> None:
        self.states.append(state)


def make_sink(
    tmp_path, transport: FakeTransport, observer: Observer | None = None, **overrides: Any
) -> DeliverySink:
    config: dict[str, Any] = {"name": "fake", "retry": FAST_RETRY, "batch": {"max_age": 0}}
    config.update(overrides)
    return DeliverySink(FakeSettings(**config), transport, state_dir=tmp_path, observer=observer)


async def test_a_large_batch_is_cut_by_count_and_bytes_in_order(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_events": 10, "max_bytes": 2048, "max_age": 0})
    await sink.start()
    batch = envelopes("activities", 45)
    await sink.send(batch)
    await sink.close()
    sizes = [len(r) for r in transport.requests]
    assert sum(sizes) == 45 and max(sizes) <= 10
    payload = len(transport.encode(batch[0]))
    assert all(size * payload <= 2048 or size == 1 for size in sizes), sizes
    assert [k for r in transport.requests for k in r] == [e.key for e in batch]


async def test_concurrent_sends_of_several_streams_are_coalesced(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_events": 100, "max_age": 0.2})
    await sink.start()
    streams = ["activities", "queries", "roles_history"]
    await asyncio.gather(*(sink.send(envelopes(s, 5)) for s in streams))
    await sink.close()
    assert len(transport.requests) == 1, transport.requests
    assert sorted(transport.requests[0]) == sorted(e.key for s in streams for e in envelopes(s, 5))


async def test_by_default_what_arrives_during_a_request_is_coalesced_into_the_next(tmp_path):
    transport = FakeTransport()
    transport.gate = asyncio.Event()
    sink = DeliverySink(FakeSettings(name="fake"), transport, state_dir=tmp_path)  # default batch settings
    await sink.start()
    first = asyncio.create_task(sink.send(envelopes("activities", 2)))
    await async_wait_until(lambda: transport.requests, what="the first request")
    others = asyncio.gather(
        *(sink.send(envelopes(s, 2)) for s in ("queries", "roles_history", "users_history"))
    )
    # All three are queued (encoded, then queued in the same step) while the first is in flight.
    await async_wait_until(lambda: transport.encoded == 8, what="the other sends queued")
    transport.gate.set()
    await first
    await others
    await sink.close()
    assert [len(r) for r in transport.requests] == [2, 6]


async def test_a_partial_request_waits_for_max_age(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_events": 100, "max_age": 0.3})
    await sink.start()
    queued_before = time.monotonic()  # the sink stamps the events after this
    await sink.send(envelopes("activities", 3))
    await sink.close()
    assert transport.requests == [[f"activities-{i}" for i in range(3)]]
    assert transport.written_at[0] - queued_before >= 0.3, "a partial request went out before max_age"


async def test_flush_sends_a_partial_request_now(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_events": 100, "max_age": 3600})
    await sink.start()
    sending = asyncio.create_task(sink.send(envelopes("activities", 3)))
    await async_wait_until(lambda: transport.encoded == 3, what="the events queued")
    flushed_at = time.monotonic()
    async with asyncio.timeout(10):  # without flush, max_age would hold them for an hour
        await sink.flush()
        await sending
    assert transport.requests == [[f"activities-{i}" for i in range(3)]]
    assert transport.written_at[0] >= flushed_at, "sent before the flush, not by it"
    await sink.close()


async def test_send_now_sends_what_is_held_with_its_batch_without_waiting_for_max_age(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_events": 100, "max_age": 3600})
    await sink.start()
    held = asyncio.create_task(sink.send(envelopes("activities", 3)))
    await async_wait_until(lambda: transport.encoded == 3, what="the first events queued")
    async with asyncio.timeout(10):  # without send_now, max_age would hold both for an hour
        await sink.send_now(envelopes("queries", 2))
        await held
    assert transport.requests == [[*(f"activities-{i}" for i in range(3)), "queries-0", "queries-1"]]
    assert not sink._flushing, "send_now leaves later sends held again"
    await sink.close()


async def test_a_stream_is_never_in_two_requests_at_once(tmp_path):
    transport = FakeTransport(max_in_flight=4)
    sink = make_sink(tmp_path, transport, batch={"max_events": 5, "max_age": 0})
    await sink.start()
    batches = {s: envelopes(s, 23) for s in ("a", "b", "c")}
    await asyncio.gather(*(sink.send(b) for b in batches.values()))
    await sink.close()
    assert transport.overlaps == 0
    for stream, batch in batches.items():
        sent = [k for r in transport.requests for k in r if k.startswith(stream + "-")]
        assert sent == [e.key for e in batch]
    assert len(transport.requests) >= 15


async def test_transient_failures_are_retried_then_health_recovers(tmp_path):
    transport = FakeTransport()
    observer = Observer()
    transport.script.extend([TransientError("503"), TransientError("503"), None])
    sink = make_sink(tmp_path, transport, observer)
    await sink.start()
    await sink.send(envelopes("activities", 4))
    assert len(transport.requests) == 3 and transport.requests[0] == transport.requests[2]
    assert observer.retries == ["503", "503"]
    assert observer.states == [SinkState.RETRYING, SinkState.OK]
    assert sink.health().state is SinkState.OK
    await sink.close()


async def test_health_is_retrying_during_an_outage_and_failed_after_unhealthy_after(tmp_path):
    transport = FakeTransport()
    transport.script.extend([TransientError("down")] * 1000)
    sink = make_sink(tmp_path, transport, retry={**FAST_RETRY, "unhealthy_after": 0.3})
    await sink.start()
    sending = asyncio.create_task(sink.send(envelopes("activities", 2)))
    await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, what="RETRYING")
    await async_wait_until(lambda: sink.health().state is SinkState.FAILED, what="FAILED")
    assert sink.health().last_error == "down" and sink.health().retries >= 2
    transport.script.clear()
    await sending
    assert sink.health().state is SinkState.OK
    await sink.close()


async def test_max_elapsed_gives_up_without_acknowledging(tmp_path):
    transport = FakeTransport()
    transport.script.extend([TransientError("down")] * 1000)
    sink = make_sink(tmp_path, transport, retry={**FAST_RETRY, "max_elapsed": 0.2})
    await sink.start()
    with pytest.raises(RetriesExhausted, match="gave up"):
        await sink.send(envelopes("activities", 2))
    await sink.close()


async def test_fatal_error_reaches_every_caller_and_acknowledges_nothing(tmp_path):
    transport = FakeTransport()
    transport.script.append(SinkFatalError("token rejected"))
    sink = make_sink(tmp_path, transport, batch={"max_age": 0.1})
    await sink.start()
    results = await asyncio.gather(
        sink.send(envelopes("a", 2)), sink.send(envelopes("b", 2)), return_exceptions=True
    )
    assert all(isinstance(r, SinkFatalError) for r in results), results
    assert sink.health().state is SinkState.FAILED
    assert not (tmp_path / "dead-letter").exists()
    await sink.send(envelopes("a", 2))  # fixed: the engine's next try goes through
    assert sink.health().state is SinkState.OK
    await sink.close()


async def test_rejections_are_dead_lettered_with_reason_and_the_rest_resent(tmp_path):
    transport = FakeTransport()
    observer = Observer()
    transport.script.append(WriteResult(rejected={1: "HEC: Invalid data format (code 6)"}, resend=[[0, 2]]))
    sink = make_sink(tmp_path, transport, observer)
    await sink.start()
    batch = envelopes("activities", 3)
    await sink.send(batch)
    await sink.close()
    assert transport.requests == [
        ["activities-0", "activities-1", "activities-2"],
        ["activities-0", "activities-2"],
    ]
    path = tmp_path / "dead-letter" / "fake.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (line,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert line["sink"] == "fake" and line["stream"] == "activities" and line["key"] == "activities-1"
    assert line["reason"] == "HEC: Invalid data format (code 6)"
    assert json.loads(line["event"]) == batch[1].event
    assert dt.datetime.fromisoformat(line["time"]).tzinfo is not None
    assert observer.dead == [1]


CLOSED = "HTTP 400 index_closed_exception: closed"


def refuse_all(records: Sequence[Record]) -> WriteResult:
    """A receiver that takes a request whole or not at all and refuses everything the same way."""
    return WriteResult.bisect(len(records), CLOSED)


def dead_letter_lines(tmp_path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter" / "fake.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_every_event_refused_alone_with_one_answer_is_the_targets_refusal_not_bad_events(tmp_path):
    """A closed index, a refused schema, a receiver that refuses every event: the stream's
    events are not dead-lettered one by one (the checkpoint would move on and the whole stream
    drain into the file); the sink fails, data kept, and an event goes alone first when the
    engine tries again, so an outage costs one request per try, not a bisection."""
    transport = FakeTransport()
    transport.answer = refuse_all
    observer = Observer()
    sink = make_sink(tmp_path, transport, observer)
    await sink.start()
    batch = envelopes("activities", 12)
    with pytest.raises(SinkFatalError, match="refused every event of stream activities") as failure:
        await sink.send(batch)
    assert CLOSED in str(failure.value) and "nothing was dead-lettered" in str(failure.value)
    assert dead_letter_lines(tmp_path) == [] and observer.dead == []
    assert sink.health().state is SinkState.FAILED
    assert len(transport.requests) == 23  # found by bisection: every event refused alone
    with pytest.raises(SinkFatalError):  # the engine tries again: one event alone, refused
        await sink.send(batch)
    assert transport.requests[23:] == [["activities-0"]]
    transport.answer = None  # the index is opened
    await sink.send(batch)
    await sink.close()
    assert transport.requests[24:] == [["activities-1"], [e.key for e in batch if e.key != "activities-1"]]
    assert sink.health().state is SinkState.OK and dead_letter_lines(tmp_path) == []


async def test_events_refused_each_for_its_own_reason_are_bad_events(tmp_path):
    transport = FakeTransport()
    transport.answer = lambda records: WriteResult.bisect(
        len(records), f"HTTP 422: {records[0].envelope.key} has no field user"
    )
    sink = make_sink(tmp_path, transport)
    await sink.start()
    await sink.send(envelopes("activities", 4))
    await sink.close()
    assert [line["key"] for line in dead_letter_lines(tmp_path)] == [f"activities-{i}" for i in range(4)]
    assert sink.health().state is SinkState.OK


async def test_some_events_taken_means_those_refused_are_bad_events(tmp_path):
    transport = FakeTransport()
    transport.answer = lambda records: WriteResult(
        rejected={i: CLOSED for i, r in enumerate(records) if r.envelope.event["seq"] % 2}
    )
    sink = make_sink(tmp_path, transport)
    await sink.start()
    await sink.send(envelopes("activities", 6))
    await sink.close()
    assert [line["key"] for line in dead_letter_lines(tmp_path)] == [
        "activities-1",
        "activities-3",
        "activities-5",
    ]


async def test_a_stream_whose_target_refuses_does_not_hold_back_another_in_the_same_request(tmp_path):
    """Per item answers (Elasticsearch's _bulk): one stream's index is closed, another's is not."""
    transport = FakeTransport()
    transport.gate = asyncio.Event()
    sink = make_sink(tmp_path, transport)
    await sink.start()
    first = asyncio.create_task(sink.send(envelopes("roles", 1)))
    await async_wait_until(lambda: transport.requests, what="a request in flight")
    closed = asyncio.create_task(sink.send(envelopes("activities", 10)))
    open_ = asyncio.create_task(sink.send(envelopes("queries", 3)))
    await async_wait_until(lambda: transport.encoded == 14, what="both streams queued")
    transport.answer = lambda records: WriteResult(
        rejected={i: CLOSED for i, r in enumerate(records) if r.envelope.stream == "activities"}
    )
    transport.gate.set()
    await first
    await open_
    with pytest.raises(SinkFatalError, match="stream activities"):
        await closed
    await sink.close()
    assert transport.requests[1] == [
        *(f"activities-{i}" for i in range(10)),
        *(f"queries-{i}" for i in range(3)),
    ]
    assert dead_letter_lines(tmp_path) == []


async def test_a_stream_moving_one_event_at_a_time_fails_the_sink_at_the_tenth_same_refusal(tmp_path):
    """One refusal cannot tell whose it is: a stream that moves one event at a time (the live
    tail) dead-letters the first nine; the tenth in a row refused with the same answer, none
    of the stream taken in between, makes it the target's refusal."""
    transport = FakeTransport()
    transport.answer = refuse_all
    sink = make_sink(tmp_path, transport)
    await sink.start()
    for seq in range(9):
        await sink.send(envelopes("activities", 1, start=seq))
    with pytest.raises(SinkFatalError, match="10 in a row"):
        await sink.send(envelopes("activities", 1, start=9))
    await sink.close()
    assert [line["key"] for line in dead_letter_lines(tmp_path)] == [f"activities-{i}" for i in range(9)]


async def test_two_bad_events_side_by_side_with_a_generic_answer_are_bad_events(tmp_path):
    """Taking them for the target's refusal would stop the stream for good on two bad events."""
    transport = FakeTransport()
    transport.answer = lambda records: (
        refuse_all(records) if any(r.envelope.event["seq"] >= 2 for r in records) else WriteResult()
    )
    sink = make_sink(tmp_path, transport, batch={"max_events": 2, "max_age": 0})
    await sink.start()
    await sink.send(envelopes("activities", 4))
    await sink.close()
    assert [line["key"] for line in dead_letter_lines(tmp_path)] == ["activities-2", "activities-3"]


async def test_one_bad_event_cannot_keep_a_stream_stopped_once_the_target_takes_events_again(tmp_path):
    """The event that goes alone first is another one at each try: if it were always the
    first, a bad first event refused with the target's answer would stop the stream for good."""
    transport = FakeTransport()
    transport.answer = refuse_all
    sink = make_sink(tmp_path, transport)
    await sink.start()
    batch = envelopes("activities", 12)
    with pytest.raises(SinkFatalError):
        await sink.send(batch)
    # the target is fixed, but activities-0 is refused for itself, with the same generic answer
    transport.answer = lambda records: (
        refuse_all(records) if "activities-0" in {r.envelope.key for r in records} else WriteResult()
    )
    with pytest.raises(SinkFatalError):
        await sink.send(batch)  # activities-0 went alone first
    await sink.send(batch)  # activities-1 goes alone first, is taken: the rest goes as usual
    await sink.close()
    assert [line["key"] for line in dead_letter_lines(tmp_path)] == ["activities-0"]
    assert sink.health().state is SinkState.OK


async def test_a_fatal_error_while_an_event_goes_alone_first_fails_every_caller(tmp_path):
    transport = FakeTransport()
    transport.answer = refuse_all
    sink = make_sink(tmp_path, transport)
    await sink.start()
    batch = envelopes("activities", 12)
    with pytest.raises(SinkFatalError):
        await sink.send(batch)
    transport.answer = None
    transport.script.append(SinkFatalError("token revoked"))
    async with asyncio.timeout(5):  # every caller hears of it: none waits for ever
        with pytest.raises(SinkFatalError, match="token revoked"):
            await sink.send(batch)
    await sink.send(batch)
    await sink.close()
    assert sink.health().state is SinkState.OK


async def test_events_the_sink_cannot_send_are_never_taken_for_the_targets_refusal(tmp_path):
    """Too large for any request, too old for CloudWatch Logs: properties of the events, which
    an old backfill can share by the thousand; they are dead-lettered whatever the count."""
    transport = FakeTransport()
    transport.answer = lambda records: WriteResult(invalid=dict.fromkeys(range(len(records)), "too old"))
    sink = make_sink(tmp_path, transport)
    await sink.start()
    await sink.send(envelopes("activities", 5))
    await sink.send(envelopes("activities", 5, start=5))
    await sink.close()
    assert len(dead_letter_lines(tmp_path)) == 10 and sink.health().state is SinkState.OK


async def test_unencodable_events_are_dead_lettered_not_sent(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, dead_letter_path=str(tmp_path / "dl.jsonl"))
    await sink.start()
    batch = envelopes("activities", 2) + envelopes("activities", 1, start=2, unencodable=True)
    await sink.send(batch)
    await sink.close()
    assert transport.requests == [["activities-0", "activities-1"]]
    assert "cannot encode" in (tmp_path / "dl.jsonl").read_text()


async def test_a_cancelled_send_leaves_the_queue(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_age": 3600})
    await sink.start()
    sending = asyncio.create_task(sink.send(envelopes("activities", 3)))
    await async_wait_until(lambda: transport.encoded == 3, what="the events queued")
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    await sink.close()
    assert transport.requests == []


async def test_close_flushes_what_is_queued_and_refuses_more(tmp_path):
    transport = FakeTransport()
    sink = make_sink(tmp_path, transport, batch={"max_age": 3600})
    await sink.start()
    sending = asyncio.create_task(sink.send(envelopes("activities", 3)))
    await async_wait_until(lambda: transport.encoded == 3, what="the events queued")
    await sink.close()
    await sending
    assert transport.requests == [[f"activities-{i}" for i in range(3)]] and transport.closed
    with pytest.raises(SinkError, match="closed"):
        await sink.send(envelopes("activities", 1))


async def test_cancelling_close_fails_unacknowledged_callers(tmp_path):
    transport = FakeTransport()
    transport.gate = asyncio.Event()  # the receiver never answers
    sink = make_sink(tmp_path, transport)
    await sink.start()
    sending = asyncio.create_task(sink.send(envelopes("activities", 3)))
    await async_wait_until(lambda: transport.requests, what="request in flight")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await sink.close()
    with pytest.raises(SinkError):
        await sending


def _state(exc: BaseException | None, attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    future: tenacity.Future = tenacity.Future(attempt)
    future.set_exception(exc or TransientError("x"))
    state.outcome = future
    return state


def test_backoff_is_exponential_jittered_and_capped():
    policy = RetryPolicy(RetrySettings(initial=1, maximum=8), rng=lambda: 0.0)
    assert [policy.wait.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    top = RetryPolicy(RetrySettings(initial=1, maximum=8), rng=lambda: 0.999999)
    assert 7.99 < top.wait.delay(10) <= 8


def test_sinks_back_off_by_the_one_rule_with_the_one_retry_after_cap():
    """auditstream has one backoff (retrying.Backoff) and one cap on a delay a receiver asks
    for; the sinks' policy is that rule with the sink's settings, not a copy beside it."""
    policy = RetryPolicy(RetrySettings(initial=1, maximum=8))
    assert isinstance(policy.wait, Backoff)
    assert (policy.wait.initial, policy.wait.maximum) == (1, 8)
    asked = _state(TransientError("busy", retry_after=99999), 1)
    assert policy.wait(asked) == MAX_ASKED_DELAY
    assert not hasattr(retry_module, "MAX_RETRY_AFTER")


def test_retry_after_wins_over_backoff():
    policy = RetryPolicy(RetrySettings(initial=0.01, maximum=0.02))
    assert policy.wait(_state(TransientError("busy", retry_after=3.0), 1)) == 3.0
    assert policy.wait(_state(TransientError("busy", retry_after=99999), 1)) == 600.0
    assert policy.wait(_state(TransientError("busy"), 1)) <= 0.02


def test_retry_after_parses_seconds_and_http_dates():
    now = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


async def test_send_in_parts_sends_again_only_the_calls_that_failed_transiently():
    async def write(part):
        if part[0] == 2:
            raise TransientError("throttled")
        if part[0] == 4:
            return WriteResult(rejected={4: "too old"})
        return WriteResult()

    result = await send_in_parts([[0, 1], [2, 3], [4, 5]], write, concurrency=2)
    assert result.resend == [[2, 3]] and result.rejected == {4: "too old"}


async def test_when_every_call_fails_the_error_is_raised_so_the_retry_backs_off():
    async def write(part):
        raise TransientError(f"down {part}")

    with pytest.raises(TransientError, match=r"down \[0\]"):
        await send_in_parts([[0], [1]], write, concurrency=4)


async def test_a_fatal_call_fails_the_whole_request():
    async def write(part):
        if part[0] == 1:
            raise SinkFatalError("denied")
        return WriteResult()

    with pytest.raises(SinkFatalError):
        await send_in_parts([[0], [1], [2]], write, concurrency=1)
