"""The gRPC surface: signatures, rate limits, faults and latency, as the real API answers."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest

from auditstream.emulator import Emulator
from auditstream.emulator.options import ResetAt
from auditstream.emulator.ratelimit import RateLimiter
from auditstream.sdm import signing
from auditstream.sdm.errors import decode_status, rate_limit_from_status
from auditstream.sdm.registry import STREAMS

from .rawclient import RawClient, build_request, signed_metadata

MakeEmulator = Callable[..., Awaitable[Emulator]]


async def _refused(client: RawClient, stream: str, request: object, metadata: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.call(stream, request, metadata)
    return caught.value


# --- signatures ----------------------------------------------------------------------


async def test_signatures_from_yesterday_to_tomorrow_are_accepted(emulator: Emulator) -> None:
    spec = STREAMS["activities"]
    request = build_request("activities", limit=1)
    body = request.SerializeToString()
    today = dt.datetime.now(dt.UTC).date()

    def metadata(day: dt.date, secret: bytes = emulator.options.secret) -> tuple[tuple[str, str], ...]:
        return (
            (signing.HEADER_ACCESS_KEY, emulator.options.access_key),
            (signing.HEADER_SIGNATURE, signing.sign(secret, spec.signing_name, body, day)),
            (signing.HEADER_API_VERSION, signing.API_VERSION),
            (signing.HEADER_USER_AGENT, signing.USER_AGENT),
        )

    async with RawClient(emulator) as client:
        for offset in (-1, 0, 1):
            response = await client.call("activities", request, metadata(today + dt.timedelta(days=offset)))
            assert len(response.activities) == 1
        for offset in (-2, 2):
            error = await _refused(client, "activities", request, metadata(today + dt.timedelta(days=offset)))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_credentials_are_unauthenticated_with_a_status_detail(emulator: Emulator) -> None:
    request = build_request("queries")
    good = dict(signed_metadata(emulator, "queries", request))
    other_body = build_request("queries", cursor="x")
    cases = {
        "no headers": (),
        "wrong access key": tuple({**good, signing.HEADER_ACCESS_KEY: "auth-somebody-else"}.items()),
        "wrong secret": signed_metadata(emulator, "queries", request, secret=b"wrong"),
        "signature of another body": signed_metadata(emulator, "queries", other_body),
        "signature of another method": tuple(
            {**good, signing.HEADER_SIGNATURE: dict(signed_metadata(emulator, "activities", request))[
                signing.HEADER_SIGNATURE]}.items()
        ),
    }  # fmt: skip
    async with RawClient(emulator) as client:
        for what, metadata in cases.items():
            error = await _refused(client, "queries", request, metadata)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, what
            status = decode_status(error.trailing_metadata())
            assert status is not None and status.code == grpc.StatusCode.UNAUTHENTICATED.value[0], what
            assert [k for k, _ in error.trailing_metadata()].count("grpc-status-details-bin") == 1
    assert emulator.stats.unauthenticated == len(cases)
    assert emulator.stats.records_served["queries"] == 0


# --- rate limits ---------------------------------------------------------------------


async def test_every_response_carries_rate_limit_metadata(make_emulator: MakeEmulator) -> None:
    unlimited = await make_emulator(records=5, streams=("activities",))
    async with RawClient(unlimited) as client:
        meta = (await client.list("activities")).rate_limit
        assert (meta.limit, meta.remaining, meta.bucket) == (5000, 5000, "read")
        assert meta.reset_at.seconds > time.time()
    limited = await make_emulator(records=5, streams=("activities",), rate_limit=10)
    async with RawClient(limited) as client:
        remaining = [(await client.list("activities")).rate_limit.remaining for _ in range(4)]
    assert remaining == [9, 8, 7, 6]


async def test_exhausted_bucket_answers_resource_exhausted_with_packed_metadata(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(records=5, streams=("activities",), rate_limit=2)
    async with RawClient(emu) as client:
        await client.list("activities")
        await client.list("activities")
        request = build_request("activities")
        error = await _refused(client, "activities", request, signed_metadata(emu, "activities", request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = rate_limit_from_status(decode_status(error.trailing_metadata()))
    assert info is not None
    assert (info.limit, info.remaining, info.bucket) == (2, 0, "read")
    assert info.reset_at is not None
    wait = (info.reset_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 0 < wait <= 30.5  # one token of a 2-per-minute bucket comes back within 30 s
    assert emu.stats.rate_limited == 1 and emu.stats.requests_total["activities"] == 3


def test_token_bucket_refills_at_the_per_minute_rate() -> None:
    clock = [1000.0]
    limiter = RateLimiter(60, monotonic=lambda: clock[0], wall_ns=lambda: 0)
    assert all(limiter.check("k").allowed for _ in range(60))
    refused = limiter.check("k")
    assert not refused.allowed and refused.metadata.reset_at.seconds == 1  # one token per second
    clock[0] += 1.0
    assert limiter.check("k").allowed
    assert not limiter.check("k").allowed
    assert limiter.check("other key").allowed


@pytest.mark.parametrize("per_minute", [None, 60])
def test_reset_at_can_announce_the_next_whole_minute(per_minute: int | None) -> None:
    """The other reading of reset_at (a fixed per-minute window): the next whole minute of
    the server's clock, on success and on refusal, rate limited or not."""
    minute = 60 * 1_000_000_000
    wall = [1_800_000_000 * 1_000_000_000 + 17 * 1_000_000_000]
    limiter = RateLimiter(
        per_minute, monotonic=lambda: 0.0, wall_ns=lambda: wall[0], reset_at=ResetAt.NEXT_MINUTE
    )
    for _ in range(61 if per_minute else 3):
        decision = limiter.check("k")
        reset = decision.metadata.reset_at.seconds * 1_000_000_000 + decision.metadata.reset_at.nanos
        assert reset == (wall[0] // minute + 1) * minute
    assert per_minute is None or not decision.allowed
    wall[0] = (wall[0] // minute + 1) * minute  # exactly on the minute: the next one, never now
    decision = limiter.check("k")
    assert decision.metadata.reset_at.seconds * 1_000_000_000 == wall[0] + minute


# --- faults and latency --------------------------------------------------------------


async def test_fault_mix(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=5, streams=("activities",), fault_rate=1.0, slow_fault_seconds=0.01)
    seen: Counter[str] = Counter()
    async with RawClient(emu) as client:
        for _ in range(60):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.list("activities")
            error = caught.value
            has_trailer = decode_status(error.trailing_metadata()) is not None
            seen[f"{error.code().name}{'' if has_trailer else ' (no trailer)'}"] += 1
    assert set(seen) == {"UNAVAILABLE", "UNAVAILABLE (no trailer)", "INTERNAL", "DEADLINE_EXCEEDED"}
    assert emu.stats.faults_injected == 60
    assert emu.stats.faults["unavailable_no_trailer"] == seen["UNAVAILABLE (no trailer)"]


async def test_a_stall_trips_the_client_deadline(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=5, streams=("activities",), fault_rate=1.0, slow_fault_seconds=30)
    async with RawClient(emu) as client:  # the fault kind is drawn per call: retry until a stall
        for _ in range(40):
            try:
                await client.list("activities", rpc_timeout=0.2)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return
    pytest.fail("no stall in 40 faulty calls")


async def test_faults_never_corrupt_a_listing(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=300, streams=("activities",), fault_rate=0.3, slow_fault_seconds=0.01)
    keys: Counter[str] = Counter()
    cursor = ""
    async with RawClient(emu) as client:
        while True:
            try:
                page = await client.list("activities", limit=17, cursor=cursor)
            except grpc.aio.AioRpcError as error:
                assert error.code() in (
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED
                )  # fmt: skip
                continue
            keys.update(r.id for r in page.activities)
            cursor = page.meta.next_cursor
            if not cursor:
                break
    assert emu.stats.faults_injected > 0
    assert max(keys.values()) == 1 and set(keys) == emu.all_keys("activities")


async def test_added_latency(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=5, streams=("activities",), latency_ms=150)
    async with RawClient(emu) as client:
        await client.list("activities")  # connect first: only the call is timed
        started = time.perf_counter()
        await client.list("activities")
    assert time.perf_counter() - started >= 0.15


async def test_unknown_methods_are_unimplemented(emulator: Emulator) -> None:
    async with grpc.aio.insecure_channel(emulator.address) as channel:
        for path in ("/v1.Accounts/List", "/v1.Replays/Get", "/v1.ManagedSecrets/List"):
            call = channel.unary_unary(path)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"")
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, path
