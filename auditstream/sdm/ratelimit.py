"""One shared pause per rate-limit bucket, and turns taken first come, first served.

When any call on a bucket is refused, every call on that bucket waits until the bucket's
``reset_at`` (plus jitter), instead of each stream discovering the limit on its own and burning
requests. Responses also carry the remaining budget; when it is exhausted we pause before being
refused.

A shared pause alone makes a thundering herd: every stream waiting on the bucket wakes at the
same instant, one call gets the token and the rest are refused again (about N-1 refusals per
granted call with N streams), and who wins is luck, so one stream can wait a very long time.
So a bucket that has been refused (or has spent its budget) becomes *constrained*: its callers
take turns through a FIFO lock (``asyncio.Lock`` wakes waiters in arrival order and a new
caller cannot overtake them). The turn holder waits out the pause and makes the one probe; a
granted holder passes the turn on, a refused one keeps it and probes again after the new pause
(see :meth:`Turn.keep` for why it does not go to the back). The bucket leaves turns when a
success reports budget to spare, so the normal path costs nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from auditstream.sdm.errors import RateLimitInfo
from auditstream.sdm.observer import ApiObserver, NullApiObserver

UNKNOWN_BUCKET = ""


def bucket_label(bucket: str | None) -> str:
    """The metrics label of a bucket: ``unknown`` until the API has named it."""
    return bucket or "unknown"


def has_budget_to_spare(info: RateLimitInfo) -> bool:
    """Whether a success shows the bucket can take unqueued traffic again.

    ``limit`` is per minute, so a tenth of it is six seconds of full-rate calls: for the
    documented 5,000/min that is 500 calls, far more than every stream of a process going at
    once (28), so leaving turns does not walk straight into another refusal. At least 2, so the
    last token of a nearly empty bucket (which the next call takes) is not mistaken for
    recovery. A bucket whose burst is below this stays in turns, which costs little: turns
    only serialise calls on that bucket, one round trip each.
    """
    return info.remaining >= max(2, info.limit // 10)


class RateLimitGate:
    def __init__(
        self,
        max_wait: float = 300.0,
        fallback_wait: float = 5.0,
        jitter: float = 0.1,
        wall_clock: Callable[[], float] = time.time,
        observer: ApiObserver | None = None,
    ) -> None:
        self._observer: ApiObserver = observer or NullApiObserver()
        self._max_wait = max_wait
        self._fallback_wait = fallback_wait
        self._jitter = jitter
        self._wall_clock = wall_clock
        self._resume_at: dict[str, float] = {}
        self._constrained: set[str] = set()
        self._turns: dict[str, asyncio.Lock] = {}

    def _until(self, bucket: str | None) -> float:
        if bucket is None or bucket == UNKNOWN_BUCKET:
            # A stream that has not learned its bucket yet respects every pause.
            return max(self._resume_at.values(), default=0.0)
        return max(self._resume_at.get(bucket, 0.0), self._resume_at.get(UNKNOWN_BUCKET, 0.0))

    def _queue_of(self, bucket: str | None) -> str | None:
        """The bucket whose turns a caller must take, or None when it may go at once.

        A known bucket takes turns when it, or the unnamed bucket (a refusal that named none,
        which every caller respects), is constrained. A caller that does not know its bucket
        yet takes turns with the other unknowing callers whenever any bucket is constrained:
        it is probably on that bucket, and queueing among themselves keeps the streams that
        start during a limit from stampeding, without guessing which lock to join.
        """
        if bucket:
            if bucket in self._constrained or UNKNOWN_BUCKET in self._constrained:
                return bucket
            return None
        return UNKNOWN_BUCKET if self._constrained else None

    def constrained(self, bucket: str | None) -> bool:
        """Whether calls on the bucket currently take turns."""
        return self._queue_of(bucket) is not None

    async def wait(self, bucket: str | None) -> float:
        """Sleep while the bucket is paused; returns the seconds waited."""
        waited = 0.0
        while True:
            delay = self._until(bucket) - self._wall_clock()
            if delay <= 0:
                return waited
            self._observer.rate_limit_wait(bucket_label(bucket), delay)
            await asyncio.sleep(delay)
            waited += delay

    @asynccontextmanager
    async def turn(self, bucket: str | None) -> AsyncIterator[Turn]:
        """The right to call on the bucket now: free, or the constrained bucket's one turn.

        Report each outcome with :meth:`refused` or :meth:`observe` inside the block, so the
        next holder sees the pause it implies; after a refusal, :meth:`Turn.keep` says whether
        to call again inside. Leaving the block passes the turn on, so a caller backing off a
        transient fault must leave it before sleeping.
        """
        turn = await self._take_turn(bucket)
        try:
            yield turn
        finally:
            turn.release()

    async def _take_turn(self, bucket: str | None) -> Turn:
        """Wait for the pause, in the bucket's queue when it is constrained.

        A constraint can begin while a free caller sleeps out a pause, and end while a queued
        one waits: both are re-checked, so a herd of sleepers joins the queue, and a queue that
        is no longer needed drains at once instead of one call at a time.
        """
        while True:
            queue = self._queue_of(bucket)
            if queue is None:
                await self.wait(bucket)
                if self._queue_of(bucket) is None:
                    return Turn(self, None, None)
                continue
            lock = self._turns.setdefault(queue, asyncio.Lock())
            await lock.acquire()
            turn = Turn(self, queue, lock)
            if self._queue_of(bucket) != queue:
                turn.release()
                continue
            try:
                await self.wait(bucket)
            except BaseException:
                turn.release()
                raise
            return turn

    def _pause(self, bucket: str, reset_at: dt.datetime | None) -> None:
        now = self._wall_clock()
        delay = reset_at.timestamp() - now if reset_at is not None else self._fallback_wait
        delay = min(max(delay, 0.05), self._max_wait)
        delay *= 1 + random.uniform(0, self._jitter)
        self._resume_at[bucket] = max(self._resume_at.get(bucket, 0.0), now + delay)

    def refused(self, info: RateLimitInfo | None) -> None:
        """A RESOURCE_EXHAUSTED: pause the bucket until its reset, and take turns from now on."""
        if info is None:
            self._pause(UNKNOWN_BUCKET, None)
            self._constrained.add(UNKNOWN_BUCKET)
            return
        bucket = info.bucket or UNKNOWN_BUCKET
        self._pause(bucket, info.reset_at)
        self._constrained.add(bucket)
        self._observer.rate_limit_remaining(bucket_label(info.bucket), info.remaining)

    def observe(self, info: RateLimitInfo | None, bucket: str | None = None) -> None:
        """A successful response: its budget decides whether the bucket pauses or takes turns.

        When the budget is spent, pause before being refused, and take turns (the pause's end
        would otherwise wake every waiter at once). What ``reset_at`` means on a success is
        undocumented (a fixed window's end, or when a token bucket is full again), so the early
        pause lasts one token's worth of time at most: right for a bucket, and for a fixed
        window the next refusal then carries the exact reset time. With budget to spare, or no
        rate-limit information at all (``bucket`` names the caller's bucket then), turns end.
        """
        if info is None:
            self._release(bucket or UNKNOWN_BUCKET)
            return
        key = info.bucket or UNKNOWN_BUCKET
        self._observer.rate_limit_remaining(bucket_label(info.bucket), info.remaining)
        if info.limit > 0 and info.remaining <= 0 and info.reset_at is not None:
            one_token = dt.timedelta(seconds=60.0 / info.limit)
            now = dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)
            self._pause(key, min(info.reset_at, now + one_token))
            self._constrained.add(key)
        elif has_budget_to_spare(info):
            self._release(key)

    def _release(self, bucket: str) -> None:
        """End turns on the bucket, and on the unnamed one.

        The unnamed bucket is constrained only by refusals that named no bucket; a success with
        budget to spare is the only evidence such a limit is over, and if it is not, the next
        refusal brings turns back at the cost of one round of refusals.
        """
        self._constrained.discard(bucket)
        self._constrained.discard(UNKNOWN_BUCKET)


class Turn:
    """One caller's right to call on a bucket, held until its ``async with`` block ends."""

    def __init__(self, gate: RateLimitGate, queue: str | None, lock: asyncio.Lock | None) -> None:
        self._gate = gate
        self._queue = queue
        self._lock = lock

    async def keep(self, bucket: str | None) -> bool:
        """After a refusal: sleep out the new pause and call again in this turn, or say leave.

        The holder of a queue's turn keeps its place at the head: it has waited longest, and
        nobody behind it could be served before the same reset anyway. Sending it to the back
        instead (tried first) made every refusal cost it a whole round of the queue: with 28
        streams and a noisy neighbour on the key, the worst wait for one call grew to 29-42 s
        against 15 s when it stays. A free caller (no queue yet), or one that has just learned
        its bucket is another queue, must leave the block and take a turn in its queue.
        """
        if self._queue is None or self._gate._queue_of(bucket) != self._queue:
            return False
        await self._gate.wait(bucket)
        return True

    def release(self) -> None:
        """Pass the turn on to the next caller in the queue (nothing to do for a free one)."""
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()
