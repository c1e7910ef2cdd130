"""One shared pause per rate-limit bucket.

When any call on a bucket is refused, every call on that bucket waits until the bucket's
``reset_at`` (plus jitter, so the streams do not stampede together), instead of each stream
discovering the limit on its own and burning requests. Responses also carry the remaining
budget; when it is exhausted we pause before being refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Callable

from auditstream.ops import metrics
from auditstream.sdm.errors import RateLimitInfo

UNKNOWN_BUCKET = ""


def bucket_label(bucket: str | None) -> str:
    """The metrics label of a bucket: ``unknown`` until the API has named it."""
    return bucket or "unknown"


class RateLimitGate:
    def __init__(
        self,
        max_wait: float = 300.0,
        fallback_wait: float = 5.0,
        jitter: float = 0.1,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_wait = max_wait
        self._fallback_wait = fallback_wait
        self._jitter = jitter
        self._wall_clock = wall_clock
        self._resume_at: dict[str, float] = {}

    def _until(self, bucket: str | None) -> float:
        if bucket is None or bucket == UNKNOWN_BUCKET:
            # A stream that has not learned its bucket yet respects every pause.
            return max(self._resume_at.values(), default=0.0)
        return max(self._resume_at.get(bucket, 0.0), self._resume_at.get(UNKNOWN_BUCKET, 0.0))

    async def wait(self, bucket: str | None) -> float:
        """Sleep while the bucket is paused; returns the seconds waited."""
        waited = 0.0
        while True:
            delay = self._until(bucket) - self._wall_clock()
            if delay <= 0:
                return waited
            label = bucket_label(bucket)
            metrics.RATE_LIMIT_WAITS.labels(label).inc()
            metrics.RATE_LIMIT_WAIT_SECONDS.labels(label).inc(delay)
            await asyncio.sleep(delay)
            waited += delay

    def _pause(self, bucket: str, reset_at: dt.datetime | None) -> None:
        now = self._wall_clock()
        delay = reset_at.timestamp() - now if reset_at is not None else self._fallback_wait
        delay = min(max(delay, 0.05), self._max_wait)
        delay *= 1 + random.uniform(0, self._jitter)
        self._resume_at[bucket] = max(self._resume_at.get(bucket, 0.0), now + delay)

    def refused(self, info: RateLimitInfo | None) -> None:
        """A RESOURCE_EXHAUSTED: pause the bucket until its reset."""
        if info is None:
            self._pause(UNKNOWN_BUCKET, None)
            return
        self._pause(info.bucket or UNKNOWN_BUCKET, info.reset_at)
        metrics.RATE_LIMIT_REMAINING.labels(bucket_label(info.bucket)).set(info.remaining)

    def observe(self, info: RateLimitInfo) -> None:
        """Budget from a successful response: when it is spent, pause before being refused.

        What ``reset_at`` means on a success is undocumented (a fixed window's end, or when
        a token bucket is full again), so the early pause lasts one token's worth of time
        at most: right for a bucket, and for a fixed window the next refusal then carries
        the exact reset time.
        """
        metrics.RATE_LIMIT_REMAINING.labels(bucket_label(info.bucket)).set(info.remaining)
        if info.limit > 0 and info.remaining <= 0 and info.reset_at is not None:
            one_token = dt.timedelta(seconds=60.0 / info.limit)
            now = dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)
            self._pause(info.bucket or UNKNOWN_BUCKET, min(info.reset_at, now + one_token))
