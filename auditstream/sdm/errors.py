"""Typed API errors, decoded from gRPC status and the ``grpc-status-details-bin`` trailer.

The SDK's own converter cannot read ``grpc.aio`` errors (their trailing metadata are plain
tuples), so the trailer is decoded here. The emulator uses :func:`status_trailer` to build
exactly the trailer the real API sends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from strongdm import spec_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ApiError(Exception):
    """Any failure talking to the StrongDM API."""

    retryable = False
    fatal = False  # no retry can help: the daemon stops and says what to fix

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientApiError(ApiError):
    """UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED: worth retrying with backoff."""

    retryable = True


class AuthenticationFailed(ApiError):
    """UNAUTHENTICATED or PERMISSION_DENIED: retrying cannot help; a human must fix the key."""

    fatal = True


class TlsVerificationFailed(ApiError):
    """The server's certificate is not trusted: a wrong endpoint, or a private CA not configured."""

    fatal = True


class BadRequestError(ApiError):
    """INVALID_ARGUMENT and other non-retryable refusals."""


@dataclass(frozen=True)
class RateLimitInfo:
    limit: int
    remaining: int
    reset_at: dt.datetime | None
    bucket: str
    reset_at_ns: int = 0  # reset_at to the nanosecond (0 when absent), for the API clock

    @classmethod
    def from_proto(cls, meta: spec_pb2.RateLimitMetadata) -> RateLimitInfo:
        reset_at = None
        if meta.HasField("reset_at") and (meta.reset_at.seconds or meta.reset_at.nanos):
            reset_at = meta.reset_at.ToDatetime(tzinfo=dt.UTC)
        return cls(
            limit=meta.limit,
            remaining=meta.remaining,
            reset_at=reset_at,
            bucket=meta.bucket,
            reset_at_ns=meta.reset_at.seconds * 1_000_000_000 + meta.reset_at.nanos,
        )


class RateLimitError(ApiError):
    """RESOURCE_EXHAUSTED: wait until ``info.reset_at`` (shared by every call on the bucket)."""

    retryable = True

    def __init__(self, message: str, info: RateLimitInfo | None) -> None:
        super().__init__(message, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.info = info


_TLS_MARKERS = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "Tls handshake failed",
    "WRONG_VERSION_NUMBER",
)
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
_AUTH = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def decode_status(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` from a call's trailer, or None when there is none.

    Proxies and load balancers answer UNAVAILABLE without a trailer, so absence is normal.
    """
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY:
            raw = value if isinstance(value, bytes) else value.encode("latin-1")
            try:
                return status_pb2.Status.FromString(raw)
            except Exception:
                return None
    return None


def rate_limit_from_status(status: status_pb2.Status | None) -> RateLimitInfo | None:
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(spec_pb2.RateLimitMetadata.DESCRIPTOR):
            meta = spec_pb2.RateLimitMetadata()
            detail.Unpack(meta)
            return RateLimitInfo.from_proto(meta)
    return None


def from_rpc_error(
    err: grpc.RpcError, *, access_key: str, stream: str, endpoint: str = "the API"
) -> ApiError:
    """Map a gRPC failure to our error types, naming the access key (never the secret)."""
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    trailer = err.trailing_metadata()  # type: ignore[attr-defined]
    status = decode_status(trailer)
    detail = (status.message if status is not None and status.message else None) or (
        err.details() or code.name  # type: ignore[attr-defined]
    )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RateLimitError(f"rate limited listing {stream}: {detail}", rate_limit_from_status(status))
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationFailed(
            f"the StrongDM API rejected access key {access_key!r} ({code.name}: {detail}) while listing "
            f"{stream}; check [source] access_key and secret_key (or secret_key_file), or the system "
            "clock: requests are signed with today's date, so a clock off by more than a day fails too",
            code,
        )
    if code in _AUTH:
        return AuthenticationFailed(
            f"the StrongDM API lacks permission for access key {access_key!r} ({code.name}: {detail}) "
            f"while listing {stream}; give the key audit read permission",
            code,
        )
    if code == grpc.StatusCode.UNAVAILABLE and any(marker in detail for marker in _TLS_MARKERS):
        reason = detail.rsplit(": ", 2)[-2] if ": " in detail else detail
        return TlsVerificationFailed(
            f"TLS with {endpoint} failed ({reason}); if the "
            "server uses a private CA set [source] ca_file to it; if it does not speak TLS at all, check "
            "[source] endpoint (insecure = true is only for the emulator)",
            code,
        )
    if code in _TRANSIENT:
        return TransientApiError(f"{code.name} listing {stream}: {detail}", code)
    return BadRequestError(f"{code.name} listing {stream}: {detail}", code)


def status_trailer(code: grpc.StatusCode, message: str, *details: object) -> tuple[tuple[str, bytes], ...]:
    """Build the trailer the real API sends: one serialized ``google.rpc.Status``."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)
