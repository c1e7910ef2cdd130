"""The API's time, as far as the daemon can tell: what "now" means for a listing window.

A window may only end at a time the API has already reached. Ending it later (a host clock
running ahead, a checkpoint written by such a host) moves the watermark into the future:
nothing is listed until real time catches up, and the next window then starts at
``watermark - overlap``, past every record in between, lost without a word. So "now" is the
host clock held between two bounds on the API's clock, each carried forward by the monotonic
clock (which no NTP step or libfaketime offset moves):

* **upper bound**: every List response (and every refusal) carries ``rate_limit.reset_at``,
  an instant set by the server's clock that is never behind the server's now (a reset lies
  ahead), and at most one rate-limit window (a minute for StrongDM's per-minute limits)
  after it. A host clock past it is ahead of the API; "now" is then the bound minus that
  window: never after the API's now, at most a minute before it (and raised by the lower
  bound as soon as records show the API's time).
* **lower bound**: a record's time is never after the API's now when it is listed, so the
  newest record time seen (plus the time elapsed since) is a time the API has certainly
  reached. A host clock behind it would only delay delivery; "now" is raised to it.

Without any observation (before the first call) the host clock is all there is; the engine
therefore makes one call before it computes any window. ``skew_ns`` (host minus estimate) is
exported as a metric and logged when it exceeds :data:`SKEW_WARNING_NS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from auditstream.sdm.registry import NANOS_PER_SECOND

log = structlog.get_logger("auditstream.apiclock")

SKEW_WARNING_NS = 30 * NANOS_PER_SECOND
"""Skew below this is left unremarked: the upper bound itself may be a minute ahead."""

RESET_WINDOW_NS = 60 * NANOS_PER_SECOND
"""How far ``reset_at`` may lie ahead of the API's now: StrongDM's limits are per minute."""
AHEAD_TOLERANCE_NS = 2 * NANOS_PER_SECOND
"""A host clock this close to the bound (a round trip, a full bucket's reset at its now) is
taken as right."""

Clock = Callable[[], int]


class ApiClock:
    """Host clock bounded by what the API has shown of its own (see the module docstring)."""

    def __init__(self, wall: Clock = time.time_ns, monotonic: Clock = time.monotonic_ns) -> None:
        self._wall = wall
        self._monotonic = monotonic
        # API time minus monotonic time, at most (from reset_at) and at least (from records).
        self._upper_offset: int | None = None
        self._lower_offset: int | None = None
        self._newest_record_ns: int | None = None
        self._warned_skew_ns = 0

    # -- observations -------------------------------------------------------------------

    def observe_reset_at(self, reset_at_ns: int) -> None:
        """A response's ``rate_limit.reset_at``: the API's now is not after it."""
        if reset_at_ns <= 0:
            return
        offset = reset_at_ns - self._monotonic()
        if self._upper_offset is None or offset < self._upper_offset:
            self._upper_offset = offset
            self._check_skew()

    def observe_record_time(self, record_ns: int) -> None:
        """The newest record time of a page: the API's now is not before it."""
        if record_ns <= 0:
            return
        if self._newest_record_ns is None or record_ns > self._newest_record_ns:
            self._newest_record_ns = record_ns
        offset = record_ns - self._monotonic()
        if self._lower_offset is None or offset > self._lower_offset:
            self._lower_offset = offset
            self._check_skew()

    # -- readings -----------------------------------------------------------------------

    @property
    def observed(self) -> bool:
        """Whether any response has told us about the API's clock yet."""
        return self._upper_offset is not None or self._lower_offset is not None

    @property
    def newest_record_ns(self) -> int | None:
        """The newest record time any listing returned (persisted: a time the API reached)."""
        return self._newest_record_ns

    def upper_ns(self) -> int | None:
        """A time the API's clock has certainly not passed yet, when any answer told us one.

        The live edge of a stream is listed up to here, not only up to :meth:`now_ns`: on a
        host whose clock is behind, those records are what shows the API's time (they raise
        the lower bound), and listing them early costs nothing (dedupe drops the re-listing).
        """
        if self._upper_offset is None:
            return None
        return self._monotonic() + self._upper_offset

    def now_ns(self) -> int:
        """The host clock, no later than the API's upper bound, no earlier than its lower one.

        When the bounds contradict each other (a record stamped after a reset the server
        announced: a gateway with a fast clock, or a server whose ``reset_at`` means
        something else), the lower one wins: listing up to a record's own time can skip
        nothing, and the overlap covers the rest.
        """
        now = self._wall()
        mono = self._monotonic()
        if self._upper_offset is not None:
            upper = mono + self._upper_offset
            # Ahead of the API: its bound may itself be up to a rate-limit window ahead, and a
            # live window ending in the API's future would leave the ground between its now
            # and that end to the sweep (late by ``overlap``) instead of the tail.
            now = upper - RESET_WINDOW_NS if now > upper + AHEAD_TOLERANCE_NS else min(now, upper)
        if self._lower_offset is not None:
            now = max(now, mono + self._lower_offset)
        return now

    def skew_ns(self) -> int:
        """Host clock minus the estimate: positive when the host runs ahead of the API."""
        return self._wall() - self.now_ns()

    def _check_skew(self) -> None:
        skew = self.skew_ns()
        if abs(skew) < SKEW_WARNING_NS or abs(skew - self._warned_skew_ns) < SKEW_WARNING_NS:
            return
        self._warned_skew_ns = skew
        direction = "ahead of" if skew > 0 else "behind"
        log.warning(
            f"the system clock is {direction} the StrongDM API's clock; windows follow the API's time",
            skew_seconds=round(skew / NANOS_PER_SECOND, 1),
            hint="synchronize the clock (NTP); a clock ahead would otherwise skip records",
        )
