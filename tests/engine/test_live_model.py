"""Live mode as a state machine: the real planner (engine.window) against a model of the API.

Hypothesis drives ``Planner``, ``Progress`` and ``WindowPolicy`` through any interleaving of
time passing, records arriving (on time, late by up to ``overlap`` and beyond, exactly on a
bound some window used), windows planned (the live edge's listing bound widened to the API's
upper bound, as ``StreamPoller._at_live_edge`` does), windows listed and completed in any
order, probes that do not fit one page, and restarts from the saved marks at any step; under
every bound semantics (``after``/``before`` inclusive or exclusive) and result order, with
the daemon's "now" up to a minute behind the API's (what sdm.apiclock allows). The marks move
as ``StreamPoller._complete_window`` moves them.

After every step:

* **no mark over incomplete ground**: every instant below the watermark lies inside a
  completed window, and every instant below the sweep mark inside a completed window listed
  at least ``overlap`` after it;
* **nothing lost**: every record below the sweep mark that became visible within ``overlap``
  of its time was delivered, and so was every record visible within ``tail`` of its time
  once the watermark is ``tail`` past it (the head's own promise, before any sweep).

At the end, time runs on until the sweep mark passes every record: each one visible within
``overlap`` of its time must have been delivered (and the marks must have got there).

The model lists a window at once, when it completes, so it sees no more than the real
poller, which lists it between planning and completion; a probe's first page is not counted
as delivered (the real poller delivers it). Both make the model stricter, never laxer.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from auditstream.engine.window import Planner, Progress, Window, WindowKind, WindowPolicy

MS = 1_000_000
S = 1_000 * MS
T0 = 1_800_000_000 * S  # the stream starts here ([streams] start_at = "now")
ORDERS = ("oldest", "newest", "unordered", "buckets")


@dataclass(frozen=True)
class Record:
    key: int
    time_ns: int
    visible_ns: int  # when the API starts listing it


@dataclass(frozen=True)
class Listed:
    window: Window
    at_ns: int  # the API's time when it was listed


class LiveStream(RuleBasedStateMachine):
    """One stream of the live daemon, its API, and the marks its checkpoint would hold."""

    @initialize(
        overlap_s=st.integers(5, 120),
        tail_s=st.integers(1, 10),
        poll_s=st.integers(1, 30),
        settle_ms=st.sampled_from([0, 200, 2_000]),
        page_size=st.integers(2, 6),
        after_inclusive=st.booleans(),
        before_inclusive=st.booleans(),
        order=st.sampled_from(ORDERS),
        ahead=st.integers(0, 3),
        behind_api_ms=st.sampled_from([0, 1, 1_500, 60_000]),
        upper_ahead_ms=st.sampled_from([0, 1, 500, 60_000]),
        seed=st.integers(0, 2**16),
    )
    def start(
        self,
        overlap_s: int,
        tail_s: int,
        poll_s: int,
        settle_ms: int,
        page_size: int,
        after_inclusive: bool,
        before_inclusive: bool,
        order: str,
        ahead: int,
        behind_api_ms: int,
        upper_ahead_ms: int,
        seed: int,
    ) -> None:
        self.policy = WindowPolicy.from_seconds(
            overlap=overlap_s,
            settle=settle_ms / 1000,
            tail=min(tail_s, overlap_s),
            poll=poll_s,
            page_size=page_size,
        )
        self.after_inclusive, self.before_inclusive, self.order = after_inclusive, before_inclusive, order
        self.ahead = ahead
        self.behind_api_ns = behind_api_ms * MS  # the daemon's now trails the API's this much
        self.upper_ahead_ns = upper_ahead_ms * MS  # reset_at lies this far past the API's now
        self.rng = random.Random(seed)
        self.api_now = T0 + self.behind_api_ns
        self.records: list[Record] = []
        self.delivered: set[int] = set()
        self.listed: list[Listed] = []
        self.bounds: set[int] = set()  # every bound a window used: records land there on purpose
        self.watermark = self.swept = T0  # what the checkpoint holds
        self._resume()

    def _resume(self) -> None:
        """What ``StreamPoller.__init__`` builds from the checkpoint (a start or a restart)."""
        self.planner = Planner(self.policy, self.watermark, self.swept)
        self.head = Progress(self.watermark)
        self.plan: list[Window] = []

    @property
    def now(self) -> int:
        return self.api_now - self.behind_api_ns

    # -- the world ------------------------------------------------------------------------

    @rule(ms=st.integers(1, 40_000))
    def time_passes(self, ms: int) -> None:
        self.api_now += ms * MS

    @rule(late_ms=st.lists(st.integers(0, 130_000), min_size=1, max_size=4))
    def records_arrive(self, late_ms: list[int]) -> None:
        """Visible now, stamped up to ``overlap`` ago (and beyond: those need not arrive)."""
        for late in late_ms:
            self._add(self.api_now - late * MS)

    @precondition(lambda self: self.bounds)
    @rule(data=st.data())
    def a_record_lands_on_a_bound(self, data: st.DataObject) -> None:
        """Exactly at an ``after``/``before`` bound a window used: the bound semantics decide."""
        past = sorted(bound for bound in self.bounds if bound <= self.api_now)
        if past:
            self._add(data.draw(st.sampled_from(past[-20:])))

    def _add(self, time_ns: int) -> None:
        self.records.append(Record(len(self.records), time_ns, self.api_now))

    # -- the daemon -----------------------------------------------------------------------

    @rule()
    def plan_windows(self) -> None:
        """``StreamPoller._plan``: the next windows, the live edge listed up to the API's bound."""
        now = self.now
        while len(self.plan) < self.ahead + 1:
            window = self.planner.next_window(now, self.watermark)
            if window is None:
                return
            upper = self.api_now + self.upper_ahead_ns
            if (
                window.kind is WindowKind.HEAD
                and window.end_ns >= now - self.policy.settle_ns
                and upper > window.end_ns
            ):
                window = dataclasses.replace(window, list_until_ns=upper)
            self.bounds.update((window.start_ns, window.end_ns, window.before_ns))
            self.plan.append(window)

    @precondition(lambda self: self.plan)
    @rule(data=st.data())
    def list_a_window(self, data: st.DataObject) -> None:
        """Any planned window, in any order, is listed and completes (or, a probe that does
        not fit one page, is planned again from its first page)."""
        window = self.plan.pop(data.draw(st.integers(0, len(self.plan) - 1)))
        self._list(window)

    @rule()
    def restart(self) -> None:
        """A crash or a stop at any step: what was planned and not completed is forgotten."""
        self._resume()

    def _list(self, window: Window) -> None:
        found = [r for r in self.records if r.visible_ns <= self.api_now and self._in(r.time_ns, window)]
        pages = self._pages(found)
        if window.probe and len(pages) > 1:
            self.planner.redo(window, [r.time_ns for r in pages[0]])
            return
        self.delivered.update(r.key for r in found)
        self.planner.completed(window, len(found))
        self.listed.append(Listed(window, self.api_now))
        # StreamPoller._complete_window: the marks this window proves.
        if window.kind is WindowKind.HEAD:
            self.watermark = max(self.watermark, self.head.add(window.start_ns, window.end_ns))
        final = self.planner.final_part(window)
        if final is not None:
            self.swept = max(self.swept, self.planner.final.add(*final))
        self.swept = min(self.swept, self.watermark)

    def _in(self, time_ns: int, window: Window) -> bool:
        lo, hi = window.start_ns, window.before_ns
        after = time_ns >= lo if self.after_inclusive else time_ns > lo
        before = time_ns <= hi if self.before_inclusive else time_ns < hi
        return after and before

    def _pages(self, found: list[Record]) -> list[list[Record]]:
        size = self.policy.page_size
        ordered = sorted(found, key=lambda r: (r.time_ns, r.key))
        if self.order == "newest":
            ordered.reverse()
        elif self.order == "unordered":
            self.rng.shuffle(ordered)
        chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        if self.order == "buckets":  # time-local pages in a scrambled order
            self.rng.shuffle(chunks)
        return chunks or [[]]

    # -- the promises -----------------------------------------------------------------------

    @invariant()
    def marks_are_ordered(self) -> None:
        assert T0 <= self.swept <= self.watermark <= self.now, (self.swept, self.watermark, self.now)

    @invariant()
    def no_mark_over_incomplete_ground(self) -> None:
        proofs = [(done.window.start_ns, done.window.end_ns) for done in self.listed]
        gap = first_gap(proofs, T0, self.watermark)
        assert gap is None, f"watermark {self.watermark - T0} passes {gap - T0}, inside no completed window"
        overlap = self.policy.overlap_ns
        finals = [(d.window.start_ns, min(d.window.end_ns, d.at_ns - overlap + 1)) for d in self.listed]
        gap = first_gap(finals, T0, self.swept)
        assert gap is None, (
            f"sweep mark {self.swept - T0} passes {gap - T0}, listed less than overlap after it"
        )

    @invariant()
    def nothing_lost(self) -> None:
        policy = self.policy
        for record in self.records:
            if record.key in self.delivered or record.time_ns < T0:
                continue
            late = record.visible_ns - record.time_ns
            assert not (record.time_ns < self.swept and late <= policy.overlap_ns), (
                f"record at {record.time_ns - T0} (visible {late / S:g}s late) lost below the sweep mark"
            )
            assert not (record.time_ns + policy.tail_ns <= self.watermark and late <= policy.tail_ns), (
                f"record at {record.time_ns - T0} (visible {late / S:g}s late) missed by the head"
            )

    def teardown(self) -> None:
        """Time runs on, nothing new arrives: the sweep mark passes every record, and every
        record visible within ``overlap`` of its time has been delivered."""
        if not hasattr(self, "policy") or not self.records:
            return
        newest = max(r.time_ns for r in self.records)
        step = max(self.policy.poll_ns, self.policy.sweep_period_ns // 2)
        for _ in range(200):
            if self.swept > newest and not self.plan:
                break
            self.api_now += step
            self.plan_windows()
            while self.plan:
                self._list(self.plan.pop(0))
                self.plan_windows()
        assert self.swept > newest, (
            f"the sweep mark stopped {newest - self.swept}ns short of the newest record"
        )
        self.nothing_lost()
        lost = [
            r
            for r in self.records
            if r.time_ns >= T0
            and r.visible_ns - r.time_ns <= self.policy.overlap_ns
            and r.key not in self.delivered
        ]
        assert not lost, f"{len(lost)} records lost, e.g. {lost[:3]}"


def first_gap(intervals: list[tuple[int, int]], start: int, end: int) -> int | None:
    """The first instant of ``[start, end)`` inside none of the open ``intervals`` (a record
    exactly at a window's bound may be outside it, whatever the bound semantics)."""
    at = start
    ordered = sorted(intervals)
    while at < end:
        reach = max((hi for lo, hi in ordered if lo < at < hi), default=None)
        if reach is None:
            return at
        at = reach
    return None


LiveStream.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no "explain": minutes
)
test_live_mode = LiveStream.TestCase
