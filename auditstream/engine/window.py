"""Which windows a stream lists, and what each proves once it has been listed in full.

A stream keeps two marks (engine.checkpoint):

* the **watermark**: every record before it has been listed and delivered, as far as it was
  visible when listed. *Head* windows move it forward. At the live edge each poll covers
  ``[watermark - tail, now]`` (its listing reaches on to the API's upper time bound, see
  ``Window.list_until_ns``, but proves only up to ``now``): the short ``tail`` catches records
  stamped just before the last poll that became visible just after it (StrongDM: "a few
  seconds to be processed"), and makes the API's bound semantics irrelevant (a record at
  exactly the boundary is in one of the two listings whether ``after``/``before`` are
  inclusive or not). ``now`` is the API's time (sdm.apiclock), never the host's alone.
* the **sweep mark**: every record before it is final, late arrivals included. A record may
  become visible up to ``overlap`` after its time; a range listed before it was that old is
  listed once more, by a *sweep* window, once it is. A record is thus listed about twice
  (the head, the sweep) instead of once per poll for as long as the overlap lasts (eleven
  times at 30 s polls and a 5 minute overlap). A range the head lists when it is already
  ``overlap`` old (a backfill, a catch-up) is final at once and never swept. A record
  visible later than ``tail`` after its time is delivered by the sweep, at most about
  ``overlap`` after its time; later than ``overlap``, it is not covered.

Both marks advance only over a contiguous run of completed windows (:class:`Progress`), so
the order in which windows complete never matters for correctness.

Window **lengths follow the stream's density** (records per nanosecond seen in its completed
windows) so that one holds about ``target_pages`` pages: a sparse stretch (most history
streams, most of a 13-month backfill) is crossed in one call, a dense hour is cut into
windows that can be listed concurrently (engine.prefetch). Without a density yet, or when a
window is expected to fit one page, it is a *probe*: if its first page comes back with a
cursor, the listing stops there and that page (a sample of the window's records) sizes the
windows that replace it. Adjacent windows overlap by a small ``edge`` for the same
bound-semantics reason as the tail.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from auditstream.sdm.registry import NANOS_PER_SECOND

MS = 1_000_000
MIN_WINDOW_NS = NANOS_PER_SECOND
"""Shorter windows are not worth a call of their own."""
MAX_GROWTH = 8
"""A window is at most this many times longer than the one before it: density seen in one
stretch says little about the next, and a too-long dense window cannot be listed
concurrently."""
UNCONFIRMED_AHEAD = 4
"""Windows planned from a density no completed window has confirmed yet (a probe's sample,
or none at all), at most: a wrong guess then costs a few calls, not a plan full of them."""
SAMPLE_SPAN_FLOOR = 64
"""A sample's time span counts as at least its window's length over this: a page of records
sharing one instant says they are dense there, not that the whole window is. (A quarter of
that, tried for more concurrency, cut dense stretches into more windows than the call
target allows: tests/engine/test_window.py.)"""
MEASURE_SHARE = 16
"""A failed probe whose sample is spread over the whole window (records in no time order)
says nothing of how many records it holds. The ground of the first 1/16 of its sample is
listed through to measure that, then the rest is cut by the measured density into windows
listed concurrently: one round trip more than guessing, and the calls stay within 1.3 times
the minimum plus two however many records there are (BENCHMARKS.md), where cutting blind
into a few parts listed through left a dense window to one sequential listing each."""


def edge_ns(length_ns: int) -> int:
    """How far a window reaches back into the one before it."""
    return max(MS, min(NANOS_PER_SECOND, length_ns // 16))


class WindowKind(enum.Enum):
    HEAD = "head"  # new ground: moves the watermark
    SWEEP = "sweep"  # aged ground listed again: moves the sweep mark


@dataclass(frozen=True)
class Window:
    start_ns: int  # the listing's after bound
    end_ns: int  # what the window proves once listed in full
    kind: WindowKind = WindowKind.HEAD
    planned_at_ns: int = 0  # the API's time when it was planned
    probe: bool = False  # expected to fit one page: stop after the first page if it does not
    list_until_ns: int | None = None  # the listing's before bound when past end_ns (the live edge)
    urgent: bool = False  # live work (the live edge, a sweep): first in line when calls are scarce

    @property
    def before_ns(self) -> int:
        return self.end_ns if self.list_until_ns is None else max(self.end_ns, self.list_until_ns)

    @property
    def length_ns(self) -> int:
        return max(self.end_ns - self.start_ns, 1)

    @property
    def ground(self) -> tuple[WindowKind, int, int]:
        """What it covers, whatever its listing bound: how the planner knows it again."""
        return self.kind, self.start_ns, self.end_ns

    def aged(self, overlap_ns: int) -> bool:
        """Listed when its records had all had ``overlap`` to become visible: final."""
        return self.end_ns <= self.planned_at_ns - overlap_ns


@dataclass(frozen=True)
class WindowPolicy:
    overlap_ns: int
    settle_ns: int
    tail_ns: int
    poll_ns: int
    page_size: int
    max_length_ns: int = 0  # 0: no limit but the density's
    target_pages: int = 8
    floor_ns: int | None = None  # backfill: never list before its --from
    end_ns: int | None = None  # backfill: stop here; nothing is swept
    sweep_every_ns: int = 0  # 0: derived from overlap and poll

    @classmethod
    def from_seconds(
        cls,
        *,
        overlap: float,
        settle: float,
        tail: float,
        poll: float,
        page_size: int,
        max_length: float = 0.0,
        floor_ns: int | None = None,
        end_ns: int | None = None,
    ) -> WindowPolicy:
        s = NANOS_PER_SECOND
        return cls(
            overlap_ns=int(overlap * s),
            settle_ns=int(settle * s),
            tail_ns=max(int(tail * s), MS),
            poll_ns=int(poll * s),
            page_size=page_size,
            max_length_ns=int(max_length * s),
            floor_ns=floor_ns,
            end_ns=end_ns,
        )

    @property
    def sweeps(self) -> bool:
        """A backfill only lists the past once; the live daemon sweeps what it listed fresh."""
        return self.end_ns is None and self.overlap_ns > 0

    @property
    def sweep_period_ns(self) -> int:
        """How much aged ground gathers before a sweep lists it: fewer, longer sweep windows
        cost fewer calls; a late record waits at most this much longer."""
        if self.sweep_every_ns:
            return self.sweep_every_ns
        return max(self.poll_ns, min(self.overlap_ns // 4, 60 * NANOS_PER_SECOND))

    @property
    def target_records(self) -> int:
        return self.target_pages * self.page_size


class Progress:
    """Completed windows of one kind, and the contiguous run they make from a mark.

    A window extends the run when it starts at or before the mark (windows reach back by
    their edge or tail); the others wait until the run reaches them.
    """

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self._pending: list[tuple[int, int]] = []  # (start, end), sorted by start

    def add(self, start: int, end: int) -> int:
        bisect.insort(self._pending, (start, end))
        while self._pending and self._pending[0][0] <= self.mark:
            _, done = self._pending.pop(0)
            self.mark = max(self.mark, done)
        return self.mark

    def covered(self, at: int) -> int | None:
        """The end of a completed-but-pending window containing ``at``, if any."""
        for start, end in self._pending:
            if start <= at < end:
                return end
        return None

    def next_start(self, after: int) -> int | None:
        """The start of the first completed-but-pending window beginning after ``after``."""
        starts = [start for start, _ in self._pending if start > after]
        return min(starts) if starts else None


@dataclass
class _Sizing:
    """What is known of the density of some ground, and how windows over it have grown."""

    density: float | None = None  # records per ns
    confirmed: bool = False  # measured by a completed window, not guessed from a sample
    outstanding: int = 0  # windows planned from it and not yet completed or replaced
    last_length: int | None = None
    listing: int = 0  # of those, the ones it sized (``outstanding`` may also hold back planning)

    def length(self, policy: WindowPolicy, remaining: int) -> tuple[int, bool]:
        """The next window's length over ``remaining`` ground, and whether it is a probe.

        Without any density the rest is one probe: a single call if it is as sparse as most
        ground is, a sample to size windows by if it is not. With one, windows hold about
        ``target_records`` and are listed through (a window is never abandoned once a density
        sized it, so no call is spent twice); after an empty one they grow by
        :data:`MAX_GROWTH`, over sparse ground quickly, into dense ground with a bounded
        overshoot.
        """
        if self.density is None:
            length, probe = remaining, True
        else:
            probe = False
            length = remaining if self.density <= 0 else int(policy.target_records / self.density)
            if self.last_length is not None:
                length = min(length, self.last_length * MAX_GROWTH)
        if policy.max_length_ns:
            length = min(length, policy.max_length_ns)
        length = max(length, MIN_WINDOW_NS)
        if remaining - length < max(MIN_WINDOW_NS, length // 4):
            length = remaining  # no sliver left behind: it would cost a call of its own
        length = max(min(length, remaining), 1)
        self.last_length = length
        self.outstanding += 1
        self.listing += 1
        return length, probe

    @property
    def may_plan(self) -> bool:
        """A guessed density sizes a few windows, not a plan full of them."""
        return self.confirmed or self.outstanding < UNCONFIRMED_AHEAD

    def resolved(self) -> None:
        """A window it sized completed or was replaced."""
        self.outstanding = max(self.outstanding - 1, 0)
        self.listing = max(self.listing - 1, 0)

    def measured(self, window: Window, listed: int, *, any_order: bool = False) -> None:
        """A window it sized was listed through: its density sizes the next windows.

        In a backfill (``any_order``: its windows are listed at once), except a sparser one
        while windows planned beside it are still being listed: it says little of the ground
        they cover and of what follows, and the next window, up to :data:`MAX_GROWTH` times
        longer, was one sequential listing of 50-70 pages on a backfill's slowest path (the
        first window of a stream where its records begin). Live polling takes its windows
        in turn, and every measure counts.
        """
        density = listed / window.length_ns
        self.resolved()
        if any_order and self.listing > 0 and self.density is not None and density < self.density:
            density = self.density
        self.density = density
        self.confirmed = True

    def sampled(self, window: Window, sample_ns: Sequence[int]) -> None:
        """Density from a probe's first page (``sample_ns`` sorted).

        A page may straddle distant stretches (servers that page in time buckets): a gap of
        over a quarter of the span of what is left is ground the page skipped, not sparse
        ground, and counting it made windows several times too long to list concurrently.
        """
        gaps = sorted((b - a for a, b in itertools.pairwise(sample_ns)), reverse=True)
        span = sum(gaps)
        for gap in gaps:  # largest first: a page may straddle more than two stretches
            if gap <= span // 4:
                break
            span -= gap
        floor = max(window.length_ns // SAMPLE_SPAN_FLOOR, MIN_WINDOW_NS)
        self.density = max(len(sample_ns), 1) / max(span, floor)
        self.confirmed = False
        self.outstanding = 0
        self.last_length = None


@dataclass
class _Redo:
    """Ground a probe covered without fitting one page: planned again, window by window,
    with the density its sample showed."""

    start_ns: int  # the next window's after bound
    end_ns: int
    kind: WindowKind
    urgent: bool
    list_until_ns: int | None
    whole: bool = False  # one window, listed through (a part of a spread sample)
    sizing: _Sizing = field(default_factory=_Sizing)


class Planner:
    """Cuts what a stream must list into windows, in time order, sized by its density."""

    def __init__(
        self, policy: WindowPolicy, watermark_ns: int, swept_ns: int, at_live_edge: bool = True
    ) -> None:
        self.policy = policy
        self.head_planned = watermark_ns
        self.sweep_planned = swept_ns
        self._sweep_until = swept_ns
        self._head_was_live = at_live_edge
        # The first head window is listed at once, whatever ground has gathered: a daemon that
        # waited a poll interval first would say nothing, list nothing and stay unready for
        # the whole interval (30 s by default) after every start.
        self._polled = False
        # Ground the head listed while it was less than ``tail`` old (records stamped there
        # may have become visible only after the listing): where it starts, and when it was
        # planned. The first head window planned ``tail`` (or a poll interval) later reaches
        # back to it, once. After a restart the last window may have ended at the live edge.
        self._fresh: tuple[int, int] | None = (watermark_ns - policy.tail_ns, 0) if at_live_edge else None
        self.sizing = _Sizing()  # the stream's own, for the head and the sweeps
        self.final = Progress(swept_ns)  # ranges that need no sweep
        self._redo: list[_Redo] = []
        # What sized each window planned and not yet resolved, by its ground (the poller may
        # widen a live window's listing bound, which makes it another Window object).
        self._sized_by: dict[tuple[WindowKind, int, int], _Sizing] = {}
        self._windows_planned = 0
        self._windows_listed = 0

    @property
    def density(self) -> float | None:
        return self.sizing.density

    def _start(self, planned: int, reach: int) -> int:
        """``planned - reach``, but a backfill lists nothing before its --from (one
        nanosecond before it, so a record at exactly --from is in, bounds either way)."""
        start = planned - reach
        floor = self.policy.floor_ns
        return start if floor is None else max(start, floor - 1)

    def next_window(self, now_ns: int, watermark_ns: int) -> Window | None:
        """The next window to list: ground to plan again first, then the head, then a sweep.

        None also while the windows already planned rest on an unconfirmed density: their
        completions come first.
        """
        window = self._next_redo(now_ns)
        if window is None and self._redo:
            return None
        if window is None and self.sizing.may_plan:
            window = self.next_head(now_ns) or self.next_sweep(now_ns, watermark_ns)
            if window is not None:
                self._sized_by[window.ground] = self.sizing
        if window is not None:
            self._windows_planned += 1
        return window

    # -- head -------------------------------------------------------------------------------

    def head_target(self, now_ns: int) -> int:
        end = now_ns - self.policy.settle_ns
        if self.policy.end_ns is not None:
            end = min(end, self.policy.end_ns)
        return end

    @property
    def windows_planned(self) -> int:
        """Windows planned so far (heads, sweeps, redone ground): what catch-up logs count."""
        return self._windows_planned

    @property
    def windows_listed(self) -> int:
        """Windows listed in full so far."""
        return self._windows_listed

    def head_due_ns(self) -> int:
        """When :meth:`next_head` will have a window again: at once for the first poll, then
        a poll interval of new ground gathered at the live edge, or a backfill's end reached
        (a backfill to "now" waits a second for it, not a poll interval)."""
        policy = self.policy
        waits = self._head_was_live and self._polled
        due = self.head_planned + policy.settle_ns + (policy.poll_ns if waits else 0)
        if policy.end_ns is not None:
            due = min(due, policy.end_ns + policy.settle_ns)
        return due

    def next_head(self, now_ns: int) -> Window | None:
        """The next head window, or None when the head is as far as it may go for now.

        At the live edge a new window waits until a poll interval of new ground has gathered
        (a backfill's last window does not wait, nor does the first poll after a start).
        Windows of one poll follow each other by an edge; the first of the next poll reaches
        back over the ground the last poll listed fresh (``tail``), so a record is listed by
        the head 1 + tail / poll interval times. (Each window after one ending within ``tail``
        of now used to reach back by ``tail``: a poll cut into several windows re-read its
        last ``tail`` several times.)
        """
        target = self.head_target(now_ns)
        remaining = target - self.head_planned
        if remaining <= 0:
            return None
        at_end = self.policy.end_ns is not None and target >= self.policy.end_ns
        if self._head_was_live and self._polled and remaining < self.policy.poll_ns and not at_end:
            return None
        length, probe = self.sizing.length(self.policy, remaining)
        end = self.head_planned + length
        live = end >= now_ns - self.policy.settle_ns - self.policy.tail_ns
        urgent = live and self.policy.end_ns is None
        start = self._start(self.head_planned, edge_ns(length))
        relist_after = min(self.policy.tail_ns, self.policy.poll_ns)
        if self._fresh is not None and now_ns - self._fresh[1] >= relist_after:
            start = min(start, self._start(self._fresh[0], 0))
            self._fresh = None
        fresh_from = max(start, now_ns - self.policy.tail_ns)
        if fresh_from < end and self._fresh is None:
            self._fresh = (fresh_from, now_ns)
        window = Window(start, end, WindowKind.HEAD, now_ns, probe, urgent=urgent)
        self._head_was_live = live
        self._polled = True
        self.head_planned = end
        return window

    # -- sweep ------------------------------------------------------------------------------

    def next_sweep(self, now_ns: int, watermark_ns: int) -> Window | None:
        """The next sweep window over aged ground the head listed fresh, when one is due."""
        policy = self.policy
        if not policy.sweeps:
            return None
        self.sweep_planned = max(self.sweep_planned, self.final.mark)
        if self.sweep_planned >= self._sweep_until:  # between passes: is the next one due?
            limit = min(now_ns - policy.overlap_ns, watermark_ns)
            if limit - self.sweep_planned < policy.sweep_period_ns:
                return None
            self._sweep_until = limit
        skipped = self.final.covered(self.sweep_planned)
        while skipped is not None:  # listed aged by the head: nothing to sweep there
            self.sweep_planned = skipped
            skipped = self.final.covered(self.sweep_planned)
        end_of_gap = min(self._sweep_until, self.final.next_start(self.sweep_planned) or self._sweep_until)
        remaining = end_of_gap - self.sweep_planned
        if remaining <= 0:
            return None
        length, probe = self.sizing.length(policy, remaining)
        end = self.sweep_planned + length
        start = self._start(self.sweep_planned, edge_ns(length))
        self.sweep_planned = end
        return Window(start, end, WindowKind.SWEEP, now_ns, probe, urgent=True)

    # -- what listing taught us -------------------------------------------------------------

    def completed(self, window: Window, listed: int) -> None:
        """A window was listed in full: ``listed`` records (repeats included) over its length.

        A window of ground planned again (a probe that did not fit) measures the stream's
        density too: the next head and sweeps are sized by it. Without that, every poll of a
        stream whose first probe did not fit began with a probe again (a call and a page
        spent each poll, and windows re-sized from one page's sample).
        """
        sizing = self._sized_by.pop(window.ground, self.sizing)
        sizing.measured(window, listed, any_order=self.policy.end_ns is not None)
        if sizing is not self.sizing and not window.probe:
            self.sizing.density = listed / window.length_ns
            self.sizing.confirmed = True
        self._windows_listed += 1

    def final_part(self, window: Window) -> tuple[int, int] | None:
        """The part of a completed window that needs no sweep: all of a sweep window, and of
        a head window what was ``overlap`` old when it was planned (everything, without
        sweeps: a backfill lists the past once)."""
        if window.kind is WindowKind.SWEEP or not self.policy.sweeps:
            return window.start_ns, window.end_ns
        aged_until = min(window.end_ns, window.planned_at_ns - self.policy.overlap_ns)
        return (window.start_ns, aged_until) if aged_until > window.start_ns else None

    def redo(self, window: Window, sample_ns: Sequence[int]) -> None:
        """A probe did not fit one page: plan its ground again, sized from its first page.

        A sample that sits in a stretch of the window (records in time order, or in time
        buckets as some servers page them) gives the density there. Windows sized by it cover
        the sample and the ground after it, and, separately, the ground before it, each part
        adapting as its windows complete (an empty one makes the rest of the part one probe):
        records that came oldest first leave the ground before empty (a call or two), records
        that came newest first fill it at about the sample's density. A sample spread over
        the whole window (no time order) says only that more than a page lies in it: the
        ground of a :data:`MEASURE_SHARE` of the sample is listed through first, and its
        density sizes the windows of the rest, which wait for it.
        """
        sizing = self._sized_by.pop(window.ground, None)
        if sizing is not None:
            sizing.resolved()  # else a stream whose probes keep failing would plan nothing more
        lo, hi = window.start_ns, window.end_ns
        times = sorted(t for t in sample_ns if lo <= t <= hi) or [lo]
        kind, urgent, until = window.kind, window.urgent, window.list_until_ns
        if window.length_ns <= 2 * MIN_WINDOW_NS:  # too short to cut further: listed through
            self._redo.append(_Redo(lo, hi, kind, urgent, until, whole=True))
        elif times[-1] - times[0] < window.length_ns // 2:
            pivot, reach = times[0], edge_ns(window.length_ns)
            after, before = _Sizing(), _Sizing()
            after.sampled(window, times)
            before.sampled(window, times)
            self._redo.append(_Redo(max(lo, pivot - reach), hi, kind, urgent, until, sizing=after))
            if pivot - reach > lo:  # ends before the sample: each probe of it holds fewer records
                self._redo.append(_Redo(lo, pivot - reach // 2, kind, urgent, None, sizing=before))
        else:
            cut = min(max(times[len(times) // MEASURE_SHARE], lo + MIN_WINDOW_NS), hi - MIN_WINDOW_NS)
            measured = _Sizing(outstanding=UNCONFIRMED_AHEAD)  # the rest waits for the measure
            self._redo.append(_Redo(lo, cut, kind, urgent, None, whole=True, sizing=measured))
            rest = cut - edge_ns(hi - cut)
            self._redo.append(_Redo(rest, hi, kind, urgent, until, sizing=measured))
        self._redo.sort(key=lambda part: part.start_ns)

    def _next_redo(self, now_ns: int) -> Window | None:
        part = next((p for p in self._redo if p.whole or p.sizing.may_plan), None)
        if part is None:
            return None
        if part.whole:
            start, end, probe = part.start_ns, part.end_ns, False
        else:
            length, probe = part.sizing.length(self.policy, max(part.end_ns - part.start_ns, 1))
            start, end = part.start_ns, min(part.start_ns + length, part.end_ns)
        done = start <= part.start_ns and end >= part.end_ns
        until = part.list_until_ns if end >= part.end_ns else None
        window = Window(start, end, part.kind, now_ns, probe, until, part.urgent)
        self._sized_by[window.ground] = part.sizing
        if done:
            self._redo.remove(part)
        else:
            part.start_ns = end - edge_ns(end - start)
        return window

    def is_finished(self, watermark_ns: int) -> bool:
        """A backfill whose head reached its end with no ground left to plan again: the
        ground of a probe that did not fit one page is still to be listed, though the head
        has passed it."""
        return self.policy.end_ns is not None and watermark_ns >= self.policy.end_ns and not self._redo
