"""The one backoff rule every retry in auditstream follows, as a tenacity wait.

Exponential steps from ``initial`` to ``maximum`` with *equal jitter*: half of each step is
fixed, half random, so many retriers (28 streams, several sinks) spread out without ever
collapsing to an immediate hammering. A delay the other side asked for (an HTTP
``Retry-After``, carried as the exception's ``retry_after``) wins over our own step: that is
the point of asking, within ``max_asked`` (a receiver asking for hours is probably confused).

Sinks and the API client hand it to tenacity; the pollers, whose retry recomputes its
window rather than repeating one call, read :meth:`Backoff.delay` directly.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import tenacity

MAX_ASKED_DELAY = 600.0


class Backoff(tenacity.wait.wait_base):
    def __init__(
        self,
        initial: float,
        maximum: float,
        rng: Callable[[], float] = random.random,
        max_asked: float = MAX_ASKED_DELAY,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self._max_asked = max_asked

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (1 for the first)."""
        step = min(self.maximum, self.initial * 2.0 ** max(attempt - 1, 0))
        return step / 2 + self._rng() * step / 2

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        asked = getattr(error, "retry_after", None)
        if isinstance(asked, int | float):
            return min(max(float(asked), 0.0), self._max_asked)
        return self.delay(retry_state.attempt_number)
