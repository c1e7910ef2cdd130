"""This daemon's share of the API key's calls, spent on live work first, in turn.

A StrongDM key may make 5,000 reads a minute, shared with everything else the customer runs
on it. ``[source] calls_per_minute`` (half of that by default) is this process's ceiling: a
token bucket refilled at that rate, holding at most a quarter of a minute's calls, so a
backfill cannot burn the key's whole minute in a burst.

When calls are scarce, live work goes first: the head of a caught-up stream and the sweeps
(``urgent``) are served before backfill and catch-up listings, which also leave a reserve of
tokens untouched. Callers of one kind are served first come, first served, so no stream
waits behind the others indefinitely. The key's own ``rate_limit.remaining`` counts too: when
what is left of the key's budget falls under a tenth of it, someone else is spending it, and
catch-up work waits for the window to reset, leaving the rest to live polling and to the
customer's own tools. (Refusals and an exhausted key are the rate-limit gate's business:
sdm.ratelimit.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from auditstream.sdm.errors import RateLimitInfo

BURST_FRACTION = 0.25
RESERVE_FRACTION = 0.2
"""Of the bucket, kept for urgent calls: catch-up work waits below it."""
KEY_LOW_FRACTION = 0.1


class CallBudget:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, per_minute * BURST_FRACTION)
        self._reserve = self._capacity * RESERVE_FRACTION
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock()
        self._key_low_until = 0.0
        self._queues: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}
        self._timer: asyncio.TimerHandle | None = None
        self._recent: deque[float] = deque()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        return now

    def _needed(self, urgent: bool, now: float) -> float | None:
        """Tokens that must be in the bucket to serve a caller of this kind; None: not now."""
        if urgent:
            return 1.0
        if self._queues[True] or now < self._key_low_until:
            return None
        return 1.0 + self._reserve

    def _grant(self, now: float) -> None:
        self._tokens -= 1.0
        self._recent.append(now)

    async def take(self, urgent: bool) -> None:
        """Wait for the right to make one call."""
        now = self._refill()
        needed = self._needed(urgent, now)
        if not self._queues[urgent] and needed is not None and self._tokens >= needed:
            self._grant(now)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[urgent].append(waiter)
        self._serve()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._tokens += 1.0  # granted just as it was cancelled: give the token back
            self._serve()
            raise

    def _serve(self) -> None:
        """Grant waiting callers in order, urgent ones first, as far as the tokens go; wake
        up again when the next token is due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._refill()
        for urgent in (True, False):
            queue = self._queues[urgent]
            while queue:
                if queue[0].done():  # cancelled while waiting
                    queue.popleft()
                    continue
                needed = self._needed(urgent, now)
                if needed is None or self._tokens < needed:
                    break
                self._grant(now)
                queue.popleft().set_result(None)
        waiting = [urgent for urgent in (True, False) if self._queues[urgent]]
        if not waiting:
            return
        needed = 1.0 if waiting[0] else 1.0 + self._reserve
        delay = max((needed - self._tokens) / self._rate, 0.001)
        if not waiting[0] and now < self._key_low_until:
            delay = max(delay, self._key_low_until - now)
        self._timer = asyncio.get_running_loop().call_later(delay, self._serve)

    def observe(self, info: RateLimitInfo | None, wall_now: float) -> None:
        """A response's view of the whole key: when little of it is left, catch-up waits for
        the key's reset (at most a minute)."""
        if info is None or info.limit <= 0 or info.remaining >= info.limit * KEY_LOW_FRACTION:
            return
        reset_in = 60.0
        if info.reset_at is not None:
            reset_in = min(max(info.reset_at.timestamp() - wall_now, 0.0), 60.0)
        self._key_low_until = max(self._key_low_until, self._clock() + reset_in)

    def used_last_minute(self) -> int:
        """Calls this process made over the last 60 seconds."""
        horizon = self._clock() - 60.0
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
        return len(self._recent)
