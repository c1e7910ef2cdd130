"""The API's time, as far as the daemon can tell: what "now" means for a listing window.

A window may only end at a time the API has already reached. Ending it later (a host clock
running ahead, a checkpoint written by such a host, a record stamped by a clock that runs
ahead) moves the watermark into the future: records stamped in between that become visible
after the listing are left to the sweep (an ``overlap`` late), and lost when ``overlap`` is
shorter than the gap. So "now" is the host clock held between two bounds on the API's
clock, each carried forward by the monotonic clock (which no NTP step or libfaketime offset
moves):

* **upper bound**: every List response (and every refusal) carries ``rate_limit.reset_at``,
  an instant set by the server's clock that is never behind the server's now (a reset lies
  ahead), and at most one rate-limit window (a minute for StrongDM's per-minute limits)
  after it. A host clock past it is ahead of the API; "now" is then the bound minus that
  window: never after the API's now, at most a minute before it (and raised by the lower
  bound as soon as records show the API's time).
* **lower bound**: a record's time is not after the API's now when it is listed *if the
  API's clock stamped it*. Query records are stamped by the gateway or relay that ran the
  query, whose clock may run ahead: a record from the future. So record times are kept per
  *source* (the API service listed: ``queries`` and ``replays`` list the same one), and a
  stream's "now" is raised only by its own source's records and by what at least two
  sources show (the second-newest of their times: one fast clock cannot move it), never
  past the upper bound. A host clock behind is thus corrected on every stream while one
  gateway's clock moves no other stream's windows, and even its own no further than
  ``reset_at`` allows: by as little as the reset lies ahead of the API's now (the next
  whole minute: about a poll interval, once a reset just after a minute's turn was seen;
  a bucket full again in a minute: up to :data:`RESET_WINDOW_NS`). ``[streams] overlap``
  must exceed that bound, or the sweep may come too early for the records it leaves out
  (config: ``StreamSettings.clock_bound_risk``). Without any ``reset_at``, nothing caps
  record times (each still moves only its own source's streams); a ``reset_at`` behind the
  API's now (not what is assumed here) makes the cap delay windows, never skip a record.

Without any observation (before the first call) the host clock is all there is; the engine
therefore makes one call before it computes any window. ``skew_ns`` (host minus estimate) is
exported as a metric; the warnings say the cause: the host's clock (ahead of the reset
bound, or behind records of several sources), or records from the future (past the reset
bound, or one source alone ahead of this host).
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
        # API time minus monotonic time, at most (from reset_at) and at least (from records,
        # per source: a record only proves the API's time if the API's clock stamped it).
        self._upper_offset: int | None = None
        self._lower_offsets: dict[str, int] = {}
        self._newest_record_ns: int | None = None
        self._warned_skew_ns = 0
        self._warned_future_ns: dict[str, int] = {}

    # -- observations -------------------------------------------------------------------

    def observe_reset_at(self, reset_at_ns: int) -> None:
        """A response's ``rate_limit.reset_at``: the API's now is not after it."""
        if reset_at_ns <= 0:
            return
        offset = reset_at_ns - self._monotonic()
        if self._upper_offset is None or offset < self._upper_offset:
            self._upper_offset = offset
            for source in self._lower_offsets:  # a tighter bound may show what was hidden
                self._check_future(source)
            self._check_skew()

    def observe_record_time(self, record_ns: int, source: str) -> None:
        """The newest record time of a page listed from ``source`` (an API service): the
        API's now is not before it, unless the clock that stamped it runs ahead."""
        if record_ns <= 0:
            return
        if self._newest_record_ns is None or record_ns > self._newest_record_ns:
            self._newest_record_ns = record_ns
        offset = record_ns - self._monotonic()
        known = self._lower_offsets.get(source)
        if known is None or offset > known:
            self._lower_offsets[source] = offset
            self._check_future(source)
            self._check_skew()

    # -- readings -----------------------------------------------------------------------

    @property
    def observed(self) -> bool:
        """Whether any response has told us about the API's clock yet."""
        return self._upper_offset is not None or bool(self._lower_offsets)

    @property
    def newest_record_ns(self) -> int | None:
        """The newest record time any listing returned (persisted: evidence of how far a
        watermark may be pulled back, which is capped at :meth:`now_ns` when used)."""
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

    def now_ns(self, source: str | None = None) -> int:
        """The host clock, no later than the API's upper bound, no earlier than its lower one.

        ``source``: the API service a stream lists; its "now" is raised by that source's
        record times and by what at least two sources show. Without one, by any source's
        (the estimate behind the skew metric, the lag of a stream not listed yet, and the
        checks at start). Record times never raise it past the upper bound: a record stamped
        after a reset the server announced comes from a clock ahead of the API's, and a
        window ending there would leave the on-time records up to it to the sweep.
        """
        now = self._wall()
        mono = self._monotonic()
        upper = None if self._upper_offset is None else mono + self._upper_offset
        if upper is not None:
            # Ahead of the API: its bound may itself be up to a rate-limit window ahead, and a
            # live window ending in the API's future would leave the ground between its now
            # and that end to the sweep (late by ``overlap``) instead of the tail.
            now = upper - RESET_WINDOW_NS if now > upper + AHEAD_TOLERANCE_NS else min(now, upper)
        lower = self._lower_offset(source)
        if lower is not None:
            shown = mono + lower
            now = max(now, shown if upper is None else min(shown, upper))
        return now

    def _lower_offset(self, source: str | None) -> int | None:
        """The record-time bound for ``source``'s windows (any source's when None)."""
        if source is None:
            return max(self._lower_offsets.values(), default=None)
        own = self._lower_offsets.get(source)
        shared = self._shared_offset()
        if own is None or shared is None:
            return own if shared is None else shared
        return max(own, shared)

    def _shared_offset(self) -> int | None:
        """What at least two sources show: the second-newest of their record times."""
        if len(self._lower_offsets) < 2:
            return None
        return sorted(self._lower_offsets.values(), reverse=True)[1]

    def skew_ns(self) -> int:
        """Host clock minus the estimate: positive when the host runs ahead of the API."""
        return self._wall() - self.now_ns()

    # -- warnings, by cause -------------------------------------------------------------

    def _check_future(self, source: str) -> None:
        """A record stamped past the reset bound: its source's clock runs ahead of the API's."""
        if self._upper_offset is None:
            return
        ahead = self._lower_offsets[source] - self._upper_offset
        warned = self._warned_future_ns.get(source)
        if ahead <= AHEAD_TOLERANCE_NS or (warned is not None and ahead < warned + SKEW_WARNING_NS):
            return
        self._warned_future_ns[source] = ahead
        log.warning(
            "a record is stamped after the StrongDM API's clock: the clock of whatever stamped it "
            "(a gateway or relay) runs ahead; windows stay at the API's time",
            source=source,
            ahead_of_api_seconds=round(ahead / NANOS_PER_SECOND, 1),
            hint="synchronize the clocks of the gateways and relays (NTP)",
        )

    def _check_skew(self) -> None:
        skew = self.skew_ns()
        if abs(skew) < SKEW_WARNING_NS or abs(skew - self._warned_skew_ns) < SKEW_WARNING_NS:
            return
        self._warned_skew_ns = skew
        seconds = round(skew / NANOS_PER_SECOND, 1)
        if skew > 0:
            log.warning(
                "the system clock is ahead of the StrongDM API's clock (its rate-limit reset times "
                "show it); windows follow the API's time",
                skew_seconds=seconds,
                hint="synchronize the clock (NTP); a clock ahead would otherwise skip records",
            )
            return
        # Behind: only record times show it. Several sources agreeing is this host's clock;
        # one source alone may as well be a clock of its own running ahead.
        shared = self._shared_offset()
        if shared is not None and self._wall() - (self._monotonic() + shared) <= -SKEW_WARNING_NS:
            log.warning(
                "the system clock is behind the StrongDM API's clock (records of several streams "
                "show it); windows follow the API's time",
                skew_seconds=seconds,
                hint="synchronize the clock (NTP)",
            )
            return
        log.warning(
            "records of one source are stamped ahead of the system clock: either the system clock "
            "is behind the StrongDM API's, or the clock that stamped them (a gateway or relay) runs "
            "ahead; no other source shows it. Its windows follow those times up to the API's reset bound",
            source=max(self._lower_offsets, key=self._lower_offsets.__getitem__),
            skew_seconds=seconds,
            hint="synchronize the clocks (NTP) of this host and of the gateways and relays",
        )
