"""Retry policy and health bookkeeping shared by every sink.

Exponential backoff with jitter between ``RetrySettings.initial`` and ``.maximum``; a
receiver's ``Retry-After`` wins over our own backoff (that is the point of it); with
``max_elapsed`` 0 we retry forever, because giving up would mean losing audit data.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import tenacity

from auditstream.sinks.base import RetrySettings, SinkError, SinkHealth, SinkState
from auditstream.sinks.observer import SinkObserver

# A receiver asking for more than this is probably confused; we still wait, but not for hours.
MAX_RETRY_AFTER = 600.0


class TransientError(SinkError):
    """An attempt failed in a way worth retrying (connection refused, 503, timeout...).

    ``retry_after`` is the delay the receiver asked for, in seconds, when it said so.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhausted(SinkError):
    """Retried for ``max_elapsed`` without success: the batch stays unacknowledged."""


class RetryPolicy:
    def __init__(self, settings: RetrySettings, rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self._rng = rng

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential step is fixed, half random, so retries of many
        sinks spread out but never collapse to an immediate hammering of the receiver."""
        step = min(self.settings.maximum, self.settings.initial * 2.0 ** max(attempt - 1, 0))
        return step / 2 + self._rng() * step / 2

    def wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER)
        return self.backoff(state.attempt_number)

    def stop(self) -> tenacity.stop.stop_base:
        if self.settings.max_elapsed <= 0:
            return tenacity.stop_never
        return tenacity.stop_after_delay(self.settings.max_elapsed)


class HealthTracker:
    """OK after a success; RETRYING while failing transiently; FAILED on a fatal error or
    after ``unhealthy_after`` seconds of continuous failure (so alerts fire on outages, not
    on a single 503)."""

    def __init__(
        self,
        sink: str,
        unhealthy_after: float,
        observer: SinkObserver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.health = SinkHealth()
        self._unhealthy_after = unhealthy_after
        self._observer = observer
        self._clock = clock
        self._failing_since: float | None = None

    def _set(self, state: SinkState, error: str | None) -> None:
        changed = state is not self.health.state
        self.health.mark(state, error)
        if changed:
            self._observer.health_changed(self.sink, state)

    def success(self) -> None:
        self._failing_since = None
        self._set(SinkState.OK, None)

    def failure(self, error: str) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        failing_for = now - self._failing_since
        state = SinkState.FAILED if failing_for >= self._unhealthy_after else SinkState.RETRYING
        self._set(state, error)
        self.health.retries += 1

    def fatal(self, error: str) -> None:
        if self._failing_since is None:
            self._failing_since = self._clock()
        self._set(SinkState.FAILED, error)
