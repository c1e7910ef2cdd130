"""Retry policy and health bookkeeping shared by every sink.

The backoff is auditstream's one rule, :class:`auditstream.retrying.Backoff` (exponential with
equal jitter, a receiver's ``Retry-After`` winning within the one cap on asked delays), with
the sink's ``RetrySettings.initial`` and ``.maximum``; this module adds only what is the
sinks' own: when to stop (with ``max_elapsed`` 0 never, because giving up would mean losing
audit data) and what health says meanwhile.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import tenacity

from auditstream.retrying import Backoff
from auditstream.sinks.base import RetrySettings, SinkError, SinkHealth, SinkState
from auditstream.sinks.observer import SinkObserver


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
    """A sink's retry settings as tenacity's ``wait`` (the one :class:`Backoff`) and ``stop``."""

    def __init__(self, settings: RetrySettings, rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.wait = Backoff(settings.initial, settings.maximum, rng)

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
