"""Many streams on one rate-limit bucket: the gate serves them in turn instead of in a herd.

With only a shared pause, every stream waiting on a refused bucket wakes at the pause's end:
one call gets the token and the other N-1 are refused again, and who wins is luck. These tests
run 28 streams (each its own task, one shared ``AuditClient``) against a limit far below demand
and measure refusals per granted call and the longest any call waited for its grant.

The unit-level tests run on an event loop whose clock is virtual (time jumps to the next timer
when every task waits), through the real ``AuditClient._call`` with only the RPC replaced by a
fake API, so minutes of rate-limited traffic take milliseconds and are deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import selectors
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from strongdm import spec_pb2

from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.emulator.ratelimit import RateLimiter
from auditstream.sdm.client import AuditClient, ClientSettings
from auditstream.sdm.errors import RateLimitError, RateLimitInfo, TransientApiError
from auditstream.sdm.ratelimit import RateLimitGate
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES, STREAMS

STREAM_COUNT = len(DEFAULT_STREAM_NAMES)
EPOCH = 1_700_000_000.0  # the virtual clock's start, in Unix seconds (reset_at is wall time)
RTT = 0.005  # the fake API's round trip, virtual seconds


# --- a virtual clock -------------------------------------------------------------------


class _InstantSelector(selectors.DefaultSelector):
    """Never blocks: when nothing is ready, the clock jumps by the time the loop would wait."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise AssertionError("deadlock: every task waits and no timer is set")
        self._advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        super().__init__(_InstantSelector(self._advance))
        # Timers due within this are run: at Unix-epoch magnitudes a float step is ~2e-7 s, and
        # a timer that the clock can never quite reach would spin the loop forever.
        self._clock_resolution = 1e-6

    def _advance(self, seconds: float) -> None:
        self._now += seconds

    def time(self) -> float:
        return self._now


def run_virtual(main: Coroutine[Any, Any, Any]) -> Any:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        # A failed test leaves tasks behind: end them on the loop rather than at garbage collection.
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover))
        loop.close()


def clock() -> float:
    return asyncio.get_running_loop().time()


# --- fake APIs: a limit far below demand -------------------------------------------------


class Limit(Protocol):
    def check(self) -> tuple[bool, spec_pb2.RateLimitMetadata]: ...


class TokenBucketLimit:
    """The emulator's own token bucket (refusal: reset_at when one token is back)."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._limiter = RateLimiter(
            per_minute, burst=burst, monotonic=clock, wall_ns=lambda: round(clock() * 1e9)
        )

    def check(self) -> tuple[bool, spec_pb2.RateLimitMetadata]:
        decision = self._limiter.check("key")
        return decision.allowed, decision.metadata


class FixedWindowLimit:
    """``per_window`` calls per window; every answer's reset_at is the window's end."""

    def __init__(self, per_window: int, window: float) -> None:
        self._per_window, self._window = per_window, window
        self._current, self._used = -1, 0

    def check(self) -> tuple[bool, spec_pb2.RateLimitMetadata]:
        index = int((clock() - EPOCH) // self._window)
        if index != self._current:
            self._current, self._used = index, 0
        allowed = self._used < self._per_window
        self._used += allowed
        per_minute = round(self._per_window * 60 / self._window)
        meta = spec_pb2.RateLimitMetadata(
            limit=per_minute, remaining=self._per_window - self._used, bucket="read"
        )
        meta.reset_at.FromDatetime(dt.datetime.fromtimestamp(EPOCH + (index + 1) * self._window, dt.UTC))
        return allowed, meta


@dataclass
class Tally:
    granted: int = 0
    refused: int = 0
    grant_order: list[str] = field(default_factory=list, repr=False)
    waits: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list), repr=False)

    @property
    def refused_per_granted(self) -> float:
        return self.refused / max(1, self.granted)

    @property
    def worst_wait(self) -> float:
        return max(max(w) for w in self.waits.values())


class _NoChannel:
    async def close(self) -> None:
        return None


class FakeApiClient(AuditClient):
    """The real ``_call`` (gate, turns, retries, bucket learning); only the RPC is faked."""

    def __init__(self, limit: Limit, tally: Tally, gate: RateLimitGate, **settings: Any) -> None:
        base: dict[str, Any] = dict(
            endpoint="fake",
            access_key="key",
            secret_key=base64.b64encode(b"s" * 32).decode(),
            insecure=True,
            retry_initial=0.5,
            retry_max=2.0,
        )
        super().__init__(ClientSettings(**{**base, **settings}), gate)
        self.limit, self.tally = limit, tally
        self.faults: dict[str, int] = {}  # stream -> transient faults still to inject

    def _open_channel(self) -> Any:
        return _NoChannel()

    async def _call_once(self, spec: Any, request: Any, wire: list[int] | None = None) -> Any:
        await asyncio.sleep(RTT / 2)
        if self.faults.get(spec.name, 0) > 0:
            self.faults[spec.name] -= 1
            raise TransientApiError("UNAVAILABLE (injected)")
        allowed, meta = self.limit.check()
        await asyncio.sleep(RTT / 2)
        if not allowed:
            self.tally.refused += 1
            raise RateLimitError("rate limit exceeded", RateLimitInfo.from_proto(meta))
        self.tally.granted += 1
        self.tally.grant_order.append(spec.name)
        response = spec.response_class()
        response.rate_limit.CopyFrom(meta)
        return response


async def stream_calls(client: FakeApiClient, name: str, calls: int) -> None:
    """One stream: its calls one after another, as a poller pages through a listing."""
    spec = STREAMS[name]
    for _ in range(calls):
        asked = clock()
        await client._call(spec, spec.request_class())
        client.tally.waits[name].append(clock() - asked)


async def herd(limit_factory: Callable[[], Limit], calls: int, gate_jitter: float = 0.1) -> Tally:
    tally = Tally()
    gate = RateLimitGate(jitter=gate_jitter, wall_clock=clock)
    async with FakeApiClient(limit_factory(), tally, gate) as client:
        await asyncio.gather(*(stream_calls(client, name, calls) for name in DEFAULT_STREAM_NAMES))
    return tally


LIMITS: dict[str, tuple[Callable[[], Limit], float]] = {
    # name: (the fake API, its sustained grants per second)
    "token-bucket 60/min burst 5": (lambda: TokenBucketLimit(60, burst=5), 1.0),
    "fixed window 4 per 2 s": (lambda: FixedWindowLimit(4, 2.0), 2.0),
}


@pytest.mark.parametrize("limit_name", list(LIMITS))
def test_streams_take_turns_instead_of_stampeding(limit_name: str) -> None:
    make_limit, grants_per_second = LIMITS[limit_name]
    calls = 6
    tally: Tally = run_virtual(herd(make_limit, calls))
    # One round through the queue takes every stream's turn once.
    round_trip = STREAM_COUNT / grants_per_second
    print(
        f"\n{limit_name}: {STREAM_COUNT} streams x {calls} calls: {tally.granted} granted, "
        f"{tally.refused} refused ({tally.refused_per_granted:.2f} per granted call), "
        f"worst wait {tally.worst_wait:.1f} s (one round of turns: {round_trip:.1f} s)"
    )
    assert tally.granted == STREAM_COUNT * calls
    assert tally.refused_per_granted <= 1.0, "refused calls per granted call (a herd makes ~N)"
    # First come, first served: a call waits one round, plus a little for a refused probe.
    assert tally.worst_wait <= 1.5 * round_trip, "a stream waited well past its turn"


def test_turns_are_first_come_first_served() -> None:
    """Once every stream has queued, grants go round robin: any 28 consecutive grants serve
    28 different streams (a herd serves whoever wakes first, often the same one twice)."""
    calls = 6
    tally: Tally = run_virtual(herd(lambda: TokenBucketLimit(60, burst=5), calls, gate_jitter=0.1))
    steady = tally.grant_order[STREAM_COUNT : STREAM_COUNT * (calls - 1)]
    windows = [steady[i : i + STREAM_COUNT] for i in range(len(steady) - STREAM_COUNT + 1)]
    assert windows
    unfair = [w for w in windows if len(set(w)) != STREAM_COUNT]
    assert not unfair, f"{len(unfair)} of {len(windows)} windows served some stream twice"


def test_a_transient_retry_does_not_hold_the_turn_while_it_backs_off() -> None:
    async def main() -> tuple[float, dict[str, float]]:
        tally = Tally()
        gate = RateLimitGate(jitter=0.0, wall_clock=clock)
        limit = TokenBucketLimit(600, burst=1)
        async with FakeApiClient(limit, tally, gate, retry_initial=30.0, retry_max=30.0) as client:
            gate.refused(RateLimitInfo(600, 0, dt.datetime.fromtimestamp(clock() + 0.1, dt.UTC), "read"))
            names = DEFAULT_STREAM_NAMES[:4]
            for name in names:
                client._bucket_of[name] = "read"
            client.faults[names[0]] = 1  # its first call fails, then it backs off >= 15 s
            granted_at: dict[str, float] = {}

            async def one(name: str) -> None:
                spec = STREAMS[name]
                await client._call(spec, spec.request_class())
                granted_at[name] = clock() - EPOCH

            await asyncio.gather(*(one(name) for name in names))
            return granted_at[names[0]], {n: granted_at[n] for n in names[1:]}

    retried_at, others = run_virtual(main())
    assert retried_at >= 15, "the faulty stream backed off (equal jitter: at least half its 30 s step)"
    assert all(at < 2 for at in others.values()), f"others waited for the backoff: {others}"


def test_cancelling_a_queued_or_holding_caller_leaks_no_turn() -> None:
    async def main() -> None:
        gate = RateLimitGate(jitter=0.0, wall_clock=clock)
        gate.refused(RateLimitInfo(60, 0, dt.datetime.fromtimestamp(clock() + 10, dt.UTC), "read"))
        entered: list[str] = []

        async def caller(name: str) -> None:
            async with gate.turn("read"):
                entered.append(name)

        holder = asyncio.create_task(caller("holder"))  # takes the turn, sleeps out the pause
        queued = asyncio.create_task(caller("queued"))

        def holding_and_queued() -> bool:
            turn = gate._turns.get("read")
            return turn is not None and turn.locked() and len(turn._waiters or ()) == 1

        await wait_for(holding_and_queued, "one caller holding the turn and one queued")
        queued.cancel()
        holder.cancel()
        await asyncio.gather(holder, queued, return_exceptions=True)
        assert not gate._turns["read"].locked(), "a cancelled caller left the turn taken"
        await asyncio.wait_for(caller("later"), timeout=60)
        assert entered == ["later"]

    run_virtual(main())


def test_turns_begin_on_refusal_or_spent_budget_and_end_with_budget_to_spare() -> None:
    now = 1000.0
    gate = RateLimitGate(jitter=0.0, wall_clock=lambda: now)
    reset = dt.datetime.fromtimestamp(1001, dt.UTC)
    assert not gate.constrained("read") and not gate.constrained(None), "the normal path is free"
    gate.refused(RateLimitInfo(600, 0, reset, "read"))
    assert gate.constrained("read") and gate.constrained(None), "an unknowing stream queues too"
    assert not gate.constrained("write")
    gate.observe(RateLimitInfo(600, 59, reset, "read"))
    assert gate.constrained("read"), "59 of 600/min is not budget to spare"
    gate.observe(RateLimitInfo(600, 60, reset, "read"))
    assert not gate.constrained("read")
    gate.observe(RateLimitInfo(600, 0, reset, "read"))
    assert gate.constrained("read"), "a spent budget pauses, so its end must not wake a herd"
    gate.observe(None, "read")
    assert not gate.constrained("read"), "a success without rate-limit info ends turns"
    gate.refused(None)
    assert gate.constrained("read") and gate.constrained(None), "an unnamed refusal binds everyone"
    gate.observe(RateLimitInfo(600, 600, reset, "read"))
    assert not gate.constrained("read") and not gate.constrained(None)


async def wait_for(condition: Callable[[], object], what: str, deadline: float = 60.0) -> None:
    """Yield to the loop until ``condition`` holds, failing after ``deadline`` virtual seconds."""
    give_up = clock() + deadline
    while not condition():
        if clock() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


# --- end to end, against the emulator ----------------------------------------------------

S = 1_000_000_000
EVERYTHING = (0, 2**62)


async def listing(client: AuditClient, name: str, gaps: list[float]) -> collections.Counter[str]:
    """Every record of one stream, noting the longest a page took to arrive."""
    spec = STREAMS[name]
    keys: collections.Counter[str] = collections.Counter()
    asked = time.monotonic()
    async for page in client.pages(spec, *EVERYTHING):
        gaps.append(time.monotonic() - asked)
        keys.update(spec.record_key(record) for record in page.records)
        asked = time.monotonic()
    return keys


async def test_28_streams_share_a_tight_limit_through_one_client() -> None:
    per_minute, burst = 1200, 5
    options = EmulatorOptions(
        seed=5, records=100, history_records=100, rate_limit=per_minute, rate_limit_burst=burst
    )
    async with Emulator(options) as emu:
        settings = ClientSettings(
            endpoint=emu.address,
            access_key=emu.options.access_key,
            secret_key=emu.options.secret_key,
            insecure=True,
            page_size=20,
            timeout=5.0,
        )
        gaps: list[float] = []
        started = time.monotonic()
        async with AuditClient(settings) as client:
            results = await asyncio.gather(*(listing(client, name, gaps) for name in DEFAULT_STREAM_NAMES))
        elapsed = time.monotonic() - started
        granted = sum(emu.stats.pages_served.values())
        refused = emu.stats.rate_limited
    for name, keys in zip(DEFAULT_STREAM_NAMES, results, strict=True):
        assert set(keys) == {key for key, _ in emu.truth(name)}, name
        assert all(n == 1 for n in keys.values()), f"{name}: a record listed twice"
    round_of_turns = STREAM_COUNT * 60 / per_minute
    print(
        f"\nemulator {per_minute}/min burst {burst}, {STREAM_COUNT} streams: {granted} pages granted, "
        f"{refused} refused ({refused / granted:.2f} per granted call), worst wait for a page "
        f"{max(gaps):.2f} s (one round of turns: {round_of_turns:.2f} s), {elapsed:.1f} s in all"
    )
    assert refused / granted <= 0.5, "refused calls per granted call (a herd makes ~N)"
    assert max(gaps) <= 3 * round_of_turns, "some stream waited well past its turn"
