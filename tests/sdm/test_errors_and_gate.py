import asyncio
import datetime as dt

import grpc
from strongdm import spec_pb2

from auditstream.sdm.client import format_time, time_filter
from auditstream.sdm.errors import (
    AuthenticationFailed,
    BadRequestError,
    RateLimitError,
    RateLimitInfo,
    TransientApiError,
    decode_status,
    from_rpc_error,
    status_trailer,
)
from auditstream.sdm.ratelimit import RateLimitGate


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, trailer=(), details=""):
        self._code, self._trailer, self._details = code, trailer, details

    def code(self):
        return self._code

    def trailing_metadata(self):
        return self._trailer

    def details(self):
        return self._details


def test_time_filter_is_rfc3339_utc_with_nanoseconds():
    assert format_time(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert (
        time_filter(0, 1) == 'after:"1970-01-01T00:00:00.000000000Z" before:"1970-01-01T00:00:00.000000001Z"'
    )


def test_rate_limit_detail_round_trips():
    meta = spec_pb2.RateLimitMetadata(limit=5000, remaining=0, bucket="reads")
    meta.reset_at.FromDatetime(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    trailer = status_trailer(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", meta)
    err = from_rpc_error(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, trailer), access_key="auth-1", stream="activities"
    )
    assert isinstance(err, RateLimitError)
    assert err.info is not None
    assert (err.info.limit, err.info.remaining, err.info.bucket) == (5000, 0, "reads")
    assert err.info.reset_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_resource_exhausted_without_detail_is_still_a_rate_limit():
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED), access_key="k", stream="s")
    assert isinstance(err, RateLimitError) and err.info is None


def test_auth_errors_name_the_access_key_and_never_the_secret():
    trailer = status_trailer(grpc.StatusCode.UNAUTHENTICATED, "bad signature")
    err = from_rpc_error(
        FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, trailer), access_key="auth-abc", stream="queries"
    )
    assert isinstance(err, AuthenticationFailed)
    assert "auth-abc" in str(err) and "bad signature" in str(err) and "secret_key" in str(err)
    assert "system clock" in str(err), "a signature over the wrong date fails the same way"


def test_unavailable_without_trailer_is_transient():
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, (), "proxy"), access_key="k", stream="s")
    assert isinstance(err, TransientApiError) and err.retryable
    assert isinstance(
        from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT), access_key="k", stream="s"),
        BadRequestError,
    )


def test_decode_status_accepts_str_values_and_garbage():
    assert decode_status([("grpc-status-details-bin", b"\xff\xff garbage")]) is None
    assert decode_status(None) is None


def test_gate_shares_one_pause_across_every_caller_on_the_bucket():
    now = 1000.0
    gate = RateLimitGate(max_wait=60, jitter=0.0, wall_clock=lambda: now)
    gate.refused(
        RateLimitInfo(
            limit=10, remaining=0, reset_at=dt.datetime.fromtimestamp(1000.2, dt.UTC), bucket="reads"
        )
    )
    assert abs(gate._until("reads") - 1000.2) < 1e-6, "the refused bucket waits until reset_at"
    assert abs(gate._until(None) - 1000.2) < 1e-6, "a stream that has not learned its bucket waits too"
    assert gate._until("writes") == 0, "another bucket is not paused"


def test_gate_pauses_before_refusal_when_the_budget_is_spent():
    now = 1000.0
    gate = RateLimitGate(max_wait=60, jitter=0.0, wall_clock=lambda: now)
    gate.observe(
        RateLimitInfo(limit=10, remaining=3, reset_at=dt.datetime.fromtimestamp(1005, dt.UTC), bucket="r")
    )
    assert gate._until("r") == 0
    gate.observe(
        RateLimitInfo(limit=10, remaining=0, reset_at=dt.datetime.fromtimestamp(1005, dt.UTC), bucket="r")
    )
    assert abs(gate._until("r") - 1005) < 1e-6


async def test_gate_wait_is_bounded_by_max_wait():
    gate = RateLimitGate(max_wait=0.05, jitter=0.0)
    gate.refused(RateLimitInfo(1, 0, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), "b"))
    waited = await asyncio.wait_for(gate.wait("b"), timeout=5)
    assert 0 < waited <= 0.06
