"""This daemon's share of the API key's calls, spent on live work first, in turn.

A StrongDM key may make 5,000 reads a minute, shared with everything else the customer runs
on it. ``[source] calls_per_minute`` (half of that by default) is this process's ceiling,
kept as what it says: at most that many calls in any 60 seconds (a sliding window over the
calls granted). Within it a backfill goes as fast as the API answers: the 737 calls of an
8-day backfill of 28 streams take seconds, not the 18 s a steady 2,500/min pace would, while
no minute ever holds more than the share.

When calls are scarce, live work goes first: the head of a caught-up stream and the sweeps
(``urgent``) are served before backfill and catch-up listings, which also leave a fifth of
the window untouched for them. Callers of one kind are served first come, first served, so
no stream waits behind the others indefinitely. The key's own ``rate_limit.remaining``
counts too: when what is left of the key's budget falls under a tenth of it, someone else is
spending it, and catch-up work waits for the window to reset, leaving the rest to live
polling and to the customer's own tools. (Refusals and an exhausted key are the rate-limit
gate's business: sdm.ratelimit.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from auditstream.sdm.errors import RateLimitInfo

WINDOW_SECONDS = 60.0
RESERVE_FRACTION = 0.2
"""Of the window, kept for urgent calls: catch-up work waits below it."""
KEY_LOW_FRACTION = 0.1


class CallBudget:
    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        self.per_minute = per_minute
        self._window = window_seconds
        self._reserve = int(per_minute * RESERVE_FRACTION)
        self._granted: deque[float] = deque()  # when each call of the window was granted, oldest first
        self._clock = clock
        self._key_low_until = 0.0
        self._queues: dict[bool, deque[asyncio.Future[float]]] = {True: deque(), False: deque()}
        self._timer: asyncio.TimerHandle | None = None

    def _expire(self) -> float:
        now = self._clock()
        horizon = now - self._window
        granted = self._granted
        while granted and granted[0] <= horizon:
            granted.popleft()
        return now

    def _needed(self, urgent: bool, now: float) -> int | None:
        """Calls that must be left in the window to serve a caller of this kind; None: not now."""
        if urgent:
            return 1
        if self._queues[True] or now < self._key_low_until:
            return None
        return 1 + self._reserve

    def _left(self) -> int:
        return self.per_minute - len(self._granted)

    async def take(self, urgent: bool) -> None:
        """Wait for the right to make one call."""
        now = self._expire()
        needed = self._needed(urgent, now)
        if not self._queues[urgent] and needed is not None and self._left() >= needed:
            self._granted.append(now)
            return
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queues[urgent].append(waiter)
        self._serve()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._granted.remove(waiter.result())  # granted just as it was cancelled: not used
            self._serve()
            raise

    def _serve(self) -> None:
        """Grant waiting callers in order, urgent ones first, as far as the window allows;
        wake up again when enough of its calls have aged out of it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._expire()
        for urgent in (True, False):
            queue = self._queues[urgent]
            while queue:
                if queue[0].done():  # cancelled while waiting
                    queue.popleft()
                    continue
                needed = self._needed(urgent, now)
                if needed is None or self._left() < needed:
                    break
                self._granted.append(now)
                queue.popleft().set_result(now)
        waiting = [urgent for urgent in (True, False) if self._queues[urgent]]
        if not waiting:
            return
        needed = 1 if waiting[0] else 1 + self._reserve
        must_age = needed - self._left()  # that many of the oldest calls must leave the window
        delay = 0.001
        if 0 < must_age <= len(self._granted):
            delay = max(self._granted[must_age - 1] + self._window - now, delay)
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
        """Calls this process made over the window (the last 60 seconds)."""
        self._expire()
        return len(self._granted)
