"""Token-bucket rate limiting that answers the way the real API does.

StrongDM documents 5,000 reads per minute per API key. Each access key gets a bucket of
``limit`` tokens refilled at ``limit / 60`` per second; a call takes one token or is
refused with RESOURCE_EXHAUSTED carrying a packed ``v1.RateLimitMetadata``. Every
successful List response reports the same metadata in its ``rate_limit`` field, so a
client can pace itself before it is refused.

``reset_at`` semantics (the real ones are undocumented, so they are an option,
``ResetAt``): by default, on a refusal, the instant one token is available again (the
earliest retry that can succeed); on success, the instant the bucket would be full again.
Under ``next-minute``, always the next whole minute of the server's clock, as a fixed
per-minute window would reset. The bucket name is ``"read"`` (List calls are reads).

With rate limiting off, responses still carry metadata: the documented 5,000 per minute
and a full bucket, so a pacing client never slows down for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from strongdm import spec_pb2

from auditstream.emulator.options import ResetAt

DOCUMENTED_READS_PER_MINUTE = 5000
NANOS = 1_000_000_000
MINUTE_NS = 60 * NANOS


@dataclass(frozen=True)
class Decision:
    allowed: bool
    metadata: spec_pb2.RateLimitMetadata


class TokenBucket:
    def __init__(self, per_minute: int, now: float, burst: int | None = None) -> None:
        self.capacity = float(burst or per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> tuple[bool, float]:
        """Take a token if one is there; returns (allowed, seconds until reset_at)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, (self.capacity - self.tokens) / self.rate
        return False, (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(
        self,
        per_minute: int | None,
        bucket: str = "read",
        burst: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        reset_at: ResetAt = ResetAt.BUCKET,
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.bucket = bucket
        self.reset_at = reset_at
        self._monotonic = monotonic
        self._wall_ns = wall_ns
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, access_key: str) -> Decision:
        wall = self._wall_ns()
        if self.per_minute is None:
            return Decision(
                True, self._metadata(DOCUMENTED_READS_PER_MINUTE, DOCUMENTED_READS_PER_MINUTE, wall)
            )
        now = self._monotonic()
        bucket = self._buckets.get(access_key)
        if bucket is None:
            bucket = self._buckets[access_key] = TokenBucket(self.per_minute, now, self.burst)
        allowed, reset_in = bucket.take(now)
        reset_ns = wall + max(1, round(reset_in * NANOS))
        return Decision(allowed, self._metadata(self.per_minute, int(bucket.tokens), reset_ns))

    def _metadata(self, limit: int, remaining: int, reset_ns: int) -> spec_pb2.RateLimitMetadata:
        meta = spec_pb2.RateLimitMetadata(limit=limit, remaining=remaining, bucket=self.bucket)
        if self.reset_at is ResetAt.NEXT_MINUTE:
            reset_ns = (self._wall_ns() // MINUTE_NS + 1) * MINUTE_NS
        elif self.per_minute is None:
            reset_ns += MINUTE_NS
        meta.reset_at.seconds, meta.reset_at.nanos = divmod(reset_ns, NANOS)
        return meta
