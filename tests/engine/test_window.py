"""The planner: windows that follow the data's density and never leave a record unlisted,
whatever the API's bound semantics and order, and marks that move only over contiguous,
completed ground."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from auditstream.engine.window import (
    SAMPLE_SPAN_FLOOR,
    Planner,
    Progress,
    Window,
    WindowKind,
    WindowPolicy,
    edge_ns,
)

S = 1_000_000_000
HOUR = 3600 * S
DAY = 24 * HOUR


def policy(**kw: object) -> WindowPolicy:
    base: dict[str, object] = {"overlap": 300, "settle": 0, "tail": 10, "poll": 30, "page_size": 100}
    base.update(kw)
    return WindowPolicy.from_seconds(**base)  # type: ignore[arg-type]


@dataclass
class FakeApi:
    """Records at given times, listed with a bound semantics and an order, paged."""

    times: list[int]
    page_size: int
    after_inclusive: bool = True
    before_inclusive: bool = False
    order: str = "oldest"  # oldest | newest | buckets
    calls: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def matching(self, window: Window) -> list[int]:
        lo, hi = window.start_ns, window.before_ns
        return [
            t
            for t in self.times
            if (t >= lo if self.after_inclusive else t > lo)
            and (t <= hi if self.before_inclusive else t < hi)
        ]

    def pages(self, window: Window) -> list[list[int]]:
        found = sorted(self.matching(window))
        if self.order == "newest":
            found.reverse()
        elif self.order == "buckets":  # time-local chunks in a scrambled order, as the emulator pages
            chunks = [found[i : i + self.page_size] for i in range(0, len(found), self.page_size)]
            self.rng.shuffle(chunks)
            found = [t for chunk in chunks for t in chunk]
        return [found[i : i + self.page_size] for i in range(0, len(found), self.page_size)] or [[]]


def run_backfill(api: FakeApi, plan_policy: WindowPolicy, start: int) -> tuple[set[int], Progress, int]:
    """Plan and "list" until the planner is done; the records listed, the head, the calls."""
    planner = Planner(plan_policy, start, start, at_live_edge=False)
    head = Progress(start)
    listed: set[int] = set()
    now = (plan_policy.end_ns or 0) + DAY
    for _ in range(10_000):
        window = planner.next_window(now, head.mark)
        if window is None:
            break
        pages = api.pages(window)
        if window.probe and len(pages) > 1:
            api.calls += 1
            listed.update(pages[0])
            planner.redo(window, pages[0])
            continue
        api.calls += len(pages)
        for page in pages:
            listed.update(page)
        planner.completed(window, sum(len(p) for p in pages))
        head.add(window.start_ns, window.end_ns)
    return listed, head, api.calls


record_times = st.lists(st.integers(0, 30 * DAY), max_size=2_000)


@settings(max_examples=60, deadline=None)
@given(
    times=record_times,
    ties=st.integers(1, 60),
    page_size=st.sampled_from([1, 7, 50, 137]),
    after_inclusive=st.booleans(),
    before_inclusive=st.booleans(),
    order=st.sampled_from(["oldest", "newest", "buckets"]),
)
def test_a_backfill_lists_every_record_whatever_the_bounds_and_order(
    times, ties, page_size, after_inclusive, before_inclusive, order
):
    """Groups of records sharing one instant (ties), page boundaries anywhere, bounds either
    way: every record is listed, and the watermark reaches the end only over listed ground."""
    start, end = 0, 30 * DAY + 1
    grouped = [t - t % max(1, ties * S) for t in times]  # many records share an instant
    api = FakeApi(grouped, page_size, after_inclusive, before_inclusive, order)
    listed, head, _ = run_backfill(api, policy(page_size=page_size, floor_ns=start, end_ns=end), start)
    assert set(grouped) <= listed
    assert head.mark >= end


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3_000), min_size=1, max_size=4),
    page_size=st.sampled_from([50, 137]),
    order=st.sampled_from(["oldest", "newest", "buckets"]),
)
def test_a_backfill_costs_close_to_the_minimum_of_calls(sizes, page_size, order):
    """Stretches of activity anywhere in thirteen months (each at least a day long), in any
    order: at most 1.3 times the minimum (every record once, in full pages) plus two calls
    once there are ten pages or more; below that, the probes that find where the records
    are cost up to five calls more than the minimum."""
    rng = random.Random(sum(sizes))
    span = 400 * DAY
    times = []
    for size in sizes:
        begin = rng.randrange(span - DAY)
        width = rng.randrange(DAY, span - begin + 1)
        times += [begin + rng.randrange(width) for _ in range(size)]
    api = FakeApi(times, page_size, order=order)
    listed, _, calls = run_backfill(api, policy(page_size=page_size, floor_ns=0, end_ns=span), 0)
    minimum = max(1, -(-len(times) // page_size))
    assert set(times) <= listed
    allowed = 1.3 * minimum + 2 if minimum >= 10 else minimum + 5
    assert calls <= allowed, f"{calls} calls for {len(times)} records (minimum {minimum})"


def test_a_burst_of_one_second_in_thirteen_months_costs_a_few_calls_more():
    """The sample of a tight burst says little about the ground around it: a few windows
    find out (documented in BENCHMARKS.md)."""
    times = [200 * DAY + i * (S // 200) for i in range(134)]
    api = FakeApi(times, 50)
    listed, _, calls = run_backfill(api, policy(page_size=50, floor_ns=0, end_ns=400 * DAY), 0)
    assert set(times) <= listed
    assert calls <= 3 * 3 + 4


def test_an_empty_stretch_is_crossed_in_one_call():
    api = FakeApi([], 100)
    _, head, calls = run_backfill(api, policy(floor_ns=0, end_ns=400 * DAY), 0)
    assert calls == 1 and head.mark == 400 * DAY


def test_a_dense_stretch_is_cut_into_windows_of_about_target_pages():
    times = list(range(0, 2 * HOUR, S // 10))  # ten a second for two hours: 72,000 records
    api = FakeApi(times, 100)
    listed, _, calls = run_backfill(api, policy(floor_ns=0, end_ns=2 * HOUR), 0)
    assert set(times) <= listed
    assert calls <= 1.3 * 720 + 2


def test_live_polls_reach_back_by_the_tail_and_wait_for_a_poll_interval():
    p = policy()
    now = 1000 * S
    planner = Planner(p, now, now)
    first = planner.next_window(now + S, now)
    assert first is not None and first.kind is WindowKind.HEAD, "the first poll is at start"
    assert first.start_ns == now - 10 * S and first.end_ns == now + S
    assert planner.next_window(now + 10 * S, now) is None, "less than a poll interval of new ground"
    window = planner.next_window(now + 32 * S, now)
    assert window is not None and window.kind is WindowKind.HEAD
    assert window.start_ns == now - 9 * S and window.end_ns == now + 32 * S
    assert window.urgent and window.probe
    following = planner.next_window(now + 63 * S, now + 32 * S)
    assert following is not None and following.start_ns == now + 22 * S, "the tail again"


def test_the_first_poll_after_a_start_is_due_at_once_not_a_poll_interval_later():
    """A fresh daemon (watermark: the API's now) or one restarted seconds after it stopped
    lists at once: waiting a poll interval (30 s shipped) left it silent and unready."""
    p = policy()  # poll 30 s
    now = 1000 * S
    planner = Planner(p, now, now)
    assert planner.head_due_ns() == now, "due at start"
    first = planner.next_window(now + S // 2, now)
    assert first is not None and first.kind is WindowKind.HEAD and first.urgent
    assert planner.windows_planned == 1
    assert planner.head_due_ns() == now + S // 2 + 30 * S, "then every poll interval"


def test_ground_listed_fresh_is_swept_once_it_is_overlap_old_and_aged_ground_never():
    p = policy(overlap=300, poll=30)
    planner = Planner(p, 0, 0, at_live_edge=False)
    catch_up = planner.next_window(3600 * S, 0)
    assert catch_up is not None and catch_up.end_ns == 3600 * S
    final = planner.final_part(catch_up)
    assert final == (catch_up.start_ns, 3300 * S), "only what was 300 s old when planned is final"
    planner.final.add(*final)
    planner.completed(catch_up, 0)
    assert planner.next_window(3610 * S, 3600 * S) is None, "nothing aged to sweep yet"
    later = 3600 * S + 300 * S + 80 * S
    head = planner.next_window(later, 3600 * S)
    assert head is not None and head.kind is WindowKind.HEAD, "new ground first"
    sweep = planner.next_window(later, 3600 * S)
    assert sweep is not None and sweep.kind is WindowKind.SWEEP and sweep.urgent
    assert sweep.start_ns <= 3300 * S and sweep.end_ns == 3600 * S, "never past the watermark"


def test_a_backfill_never_sweeps_and_never_lists_before_its_start():
    p = policy(floor_ns=10 * S, end_ns=20 * HOUR)
    planner = Planner(p, 10 * S, 10 * S)
    windows = []
    while (window := planner.next_window(10 * DAY, 0)) is not None:
        windows.append(window)
        planner.completed(window, 0)
    assert all(w.kind is WindowKind.HEAD and w.start_ns >= 10 * S - 1 for w in windows)
    assert windows[-1].end_ns == 20 * HOUR and planner.is_finished(20 * HOUR)
    assert planner.final_part(windows[0]) == (windows[0].start_ns, windows[0].end_ns)


def test_a_probe_whose_sample_is_spread_measures_a_slice_then_cuts_the_rest_by_it():
    planner = Planner(policy(floor_ns=0, end_ns=90 * DAY), 0, 0, at_live_edge=False)
    probe = planner.next_window(100 * DAY, 0)
    assert probe is not None and probe.probe
    sample = [DAY * d for d in range(0, 90, 1)]  # no time order: all over the window
    planner.redo(probe, sample)
    measure = planner.next_window(100 * DAY, 0)
    assert measure is not None and not measure.probe
    assert measure.start_ns <= 0 and measure.end_ns == sorted(sample)[len(sample) // 16]
    assert planner.next_window(100 * DAY, 0) is None, "the rest waits for the measure"
    per_day = 500  # 8 pages of 100 records (the policy's target) every 1.6 days
    planner.completed(measure, per_day * measure.end_ns // DAY)
    rest = []
    while (window := planner.next_window(100 * DAY, 0)) is not None:
        rest.append(window)
    assert len(rest) >= 16, "enough windows to list concurrently"
    assert all(not w.probe for w in rest)
    assert rest[0].start_ns < measure.end_ns and rest[-1].end_ns == 90 * DAY
    assert all(b.start_ns < a.end_ns for a, b in itertools.pairwise(rest)), "no ground left between them"
    assert max(w.length_ns for w in rest) <= 2 * 8 * 100 * DAY // per_day


def test_marks_move_only_over_contiguous_completed_ground():
    progress = Progress(100)
    assert progress.add(150, 200) == 100, "a gap before it"
    assert progress.add(90, 160) == 200, "the gap is filled: both count"
    assert progress.covered(250) is None
    assert progress.add(300, 400) == 200 and progress.covered(350) == 400


def test_edges_are_small_but_never_zero():
    assert edge_ns(1) == 1_000_000
    assert edge_ns(16 * S) == S
    assert edge_ns(10 * DAY) == S


def test_a_failed_probe_never_stops_the_head_and_its_windows_teach_the_head_the_density():
    """A failed probe is replaced (its windows sized by the sample), and the head must go on
    planning (it once stopped after four). The replacing windows measure the stream's
    density: the next polls are sized by it instead of beginning with a probe each (a call
    and a page spent every poll)."""
    p = policy(poll=1, tail=1)
    now = 1000 * S
    planner = Planner(p, now, now)
    for poll in range(1, 8):
        now += 2 * S
        window = planner.next_window(now, now)
        assert window is not None and window.kind is WindowKind.HEAD, f"poll {poll}: the head stalled"
        assert window.probe == (poll == 1), f"poll {poll}: a probe only while the density is unknown"
        if window.probe:
            planner.redo(window, [window.end_ns - S // 10 * i for i in range(100)])
        else:
            planner.completed(window, 100)
        while (part := planner.next_window(now, now)) is not None and part.kind is WindowKind.HEAD:
            planner.completed(part, 100)


def test_the_head_is_due_a_poll_interval_after_the_live_edge_or_at_a_backfills_end():
    p = policy()  # poll 30 s, settle 0
    now = 1000 * S
    live = Planner(p, now, now)
    assert live.next_window(now + S, now) is not None, "the first poll, at start"
    assert live.head_due_ns() == now + 31 * S
    assert live.next_window(live.head_due_ns() - 1, now) is None
    assert live.next_window(live.head_due_ns(), now) is not None

    ending = policy(floor_ns=0, end_ns=now + S)  # a backfill "to now": its end a second ahead
    backfill = Planner(ending, 0, 0)
    while backfill.next_window(now, 0) is not None:
        pass
    assert backfill.head_planned == now and backfill.head_due_ns() == now + S, "at the end, not a poll later"
    assert backfill.next_window(now + S - 1, now) is None
    last = backfill.next_window(now + S, now)
    assert last is not None and last.end_ns == now + S


def test_a_sample_straddling_two_distant_stretches_is_sized_by_their_density_not_the_gap():
    """Servers that page in time buckets may fill one page from two stretches days apart:
    the ground between them is skipped, not sparse. Sized by the gap, the window after the
    sample would be 800 records at 137 per two days: 11.7 days, one long sequential listing;
    by the records, 800 at one per 30 s (6.7 h), within the floor of a sample's span (an
    eight-day window over 64: 3 h, so 17.5 h)."""
    planner = Planner(policy(floor_ns=0, end_ns=8 * DAY), 0, 0, at_live_edge=False)
    probe = planner.next_window(9 * DAY, 0)
    assert probe is not None and probe.probe
    every = 30 * S  # the true density: one record every 30 s
    first = DAY
    sample = [first + i * every for i in range(68)] + [first + 2 * DAY + i * every for i in range(69)]
    planner.redo(probe, sample)
    windows = []
    while (window := planner.next_window(9 * DAY, 0)) is not None:
        windows.append(window)
    (at_sample,) = [w for w in windows if w.start_ns <= first < w.end_ns]
    floor_limited = 800 * (8 * DAY // SAMPLE_SPAN_FLOOR) // 137
    assert at_sample.length_ns <= floor_limited + S, f"{at_sample.length_ns / HOUR:.1f} h"


def test_the_head_lists_again_only_the_ground_it_listed_fresh():
    """A record may become visible up to ``tail`` after its time: ground listed when less
    than that old is listed once more by the next poll, and nothing else. A poll's ground is
    cut into windows by density and the last one ends short of now; reaching back ``tail``
    from its end re-read ground listed when it was well over ``tail`` old (listings per
    record above the 2 + tail / poll interval of the design)."""
    p = policy(page_size=100)  # windows of 8 pages: 800 records, 8 s at 100 records/s
    start = 1000 * S
    planner = Planner(p, start, start)
    first = planner.next_window(start + 31 * S, start)
    assert first is not None and first.probe
    planner.completed(first, 100 * first.length_ns // S)  # 100 records/s
    previous: tuple[int, Window] | None = None  # (when the last poll was planned, its last window)
    for poll in range(2, 7):
        now = planner.head_due_ns()
        windows = []
        while (window := planner.next_window(now, 0)) is not None and window.kind is WindowKind.HEAD:
            windows.append(window)
            planner.completed(window, 100 * window.length_ns // S)
        assert len(windows) > 1, "the poll is cut into windows"
        for before, after in itertools.pairwise(windows):
            assert after.start_ns >= before.end_ns - S, f"poll {poll}: windows of one poll meet at an edge"
        if previous is not None:
            planned_at, last = previous
            fresh_from = max(last.start_ns, planned_at - p.tail_ns)
            assert planned_at - p.tail_ns - S <= windows[0].start_ns <= fresh_from, f"poll {poll}"
        previous = now, windows[-1]


def test_a_sparse_window_listed_beside_others_does_not_size_the_next_one_alone():
    """A backfill lists the windows planned from one guess at once. The first to complete
    may be sparse (where the stream's records begin): sized by it alone, the next window
    was up to eight times longer, one sequential listing of 50-70 pages while everything
    else had finished. Listed one at a time, each measure still counts (the call target)."""
    p = policy(page_size=100, floor_ns=0, end_ns=10 * DAY)
    planner = Planner(p, 0, 0, at_live_edge=False)
    probe = planner.next_window(11 * DAY, 0)
    assert probe is not None and probe.probe
    planner.redo(probe, [9 * DAY + i * S for i in range(100)])  # a page of records close in time
    beside = []
    while (window := planner.next_window(11 * DAY, 0)) is not None:
        beside.append(window)
    assert len(beside) > 2, "several windows of the guess, listed at once"
    first = beside[0]
    planner.completed(first, 3)  # sparse: three records where the guess said 800
    following = planner.next_window(11 * DAY, 0)
    assert following is not None and following.length_ns <= max(w.length_ns for w in beside)

    alone = Planner(p, 0, 0, at_live_edge=False)
    probe = alone.next_window(11 * DAY, 0)
    assert probe is not None
    alone.redo(probe, [9 * DAY + i * S for i in range(100)])
    window = alone.next_window(11 * DAY, 0)
    assert window is not None
    alone.completed(window, 3)
    grown = alone.next_window(11 * DAY, 0)
    assert grown is not None and grown.length_ns > 4 * window.length_ns, "one at a time: crossed quickly"
