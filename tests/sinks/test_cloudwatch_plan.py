"""How a request is cut into PutLogEvents calls (property tests), and how a call's
``rejectedLogEventsInfo`` maps to events."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from auditstream.sinks.cloudwatch_logs import (
    EVENT_OVERHEAD,
    MAX_CALL_BYTES,
    MAX_CALL_EVENTS,
    MAX_EVENT_BYTES,
    MAX_SPAN_MS,
    plan_calls,
    rejected_indexes,
)

HOUR = 3600 * 1000
Event = tuple[str, int, int]

# Runs of events (one stream, evenly spaced, one size) make the limits reachable cheaply:
# 12,000 tiny events cross the count limit, a few hundred large ones the byte limit, a step
# of hours the 24-hour span; sizes around 256 KB cross the per-event limit.
sizes = st.one_of(
    st.integers(0, 300),
    st.integers(1_000, 60_000),
    st.integers(MAX_EVENT_BYTES - EVENT_OVERHEAD - 2, MAX_EVENT_BYTES - EVENT_OVERHEAD + 2),
)
runs = st.tuples(
    st.sampled_from(["activities", "queries", "roles_history"]),
    st.integers(0, 3 * 24 * HOUR),  # first timestamp
    st.one_of(st.just(0), st.integers(0, 1000), st.integers(HOUR, 7 * HOUR)),  # step
    st.one_of(st.integers(1, 50), st.integers(9_990, 12_000)),  # count
    sizes,
)


@st.composite
def requests(draw: st.DrawFn) -> list[Event]:
    events = [
        (stream, start + i * step, size)
        for stream, start, step, count, size in draw(st.lists(runs, min_size=1, max_size=5))
        for i in range(count)
    ]
    events += draw(
        st.lists(st.tuples(st.sampled_from(["activities", "queries"]), st.integers(0, 4 * 24 * HOUR), sizes))
    )
    random.Random(draw(st.integers(0, 2**32))).shuffle(events)  # pages are not always in time order
    return events


def cost(event: Event) -> int:
    return event[2] + EVENT_OVERHEAD


@settings(max_examples=150, deadline=None)
@given(requests())
def test_every_call_keeps_every_limit_and_every_event_is_placed_once(events):
    plan = plan_calls(events)
    placed = [i for call in plan.calls for i in call] + plan.oversize
    assert sorted(placed) == list(range(len(events))), "each event in exactly one call, or oversize"
    assert set(plan.oversize) == {i for i, e in enumerate(events) if cost(e) > MAX_EVENT_BYTES}
    for call in plan.calls:
        members = [events[i] for i in call]
        times = [t for _, t, _ in members]
        assert len({stream for stream, _, _ in members}) == 1, "one log stream per call"
        assert times == sorted(times), "time order within a call"
        assert len(call) <= MAX_CALL_EVENTS
        assert sum(cost(e) for e in members) <= MAX_CALL_BYTES
        assert times[-1] - times[0] < MAX_SPAN_MS, "no call spans 24 hours"
        for a, b in itertools.pairwise(call):
            if events[a][1] == events[b][1]:
                assert a < b, "equal times keep the order they came in"


@settings(max_examples=150, deadline=None)
@given(requests())
def test_a_call_ends_only_when_the_next_event_would_break_a_limit(events):
    """Greedy, so no more calls than needed: a stream's calls, in order, hold its events in
    time order, and each call ends because its next event did not fit."""
    plan = plan_calls(events)
    by_stream: dict[str, list[list[int]]] = defaultdict(list)
    for call in plan.calls:
        by_stream[events[call[0]][0]].append(call)
    for stream, calls in by_stream.items():
        flat = [i for call in calls for i in call]
        expected = sorted(
            (i for i, e in enumerate(events) if e[0] == stream and cost(e) <= MAX_EVENT_BYTES),
            key=lambda i: events[i][1],
        )
        assert flat == expected
        for call, following in itertools.pairwise(calls):
            nxt = events[following[0]]
            full = len(call) == MAX_CALL_EVENTS
            too_big = sum(cost(events[i]) for i in call) + cost(nxt) > MAX_CALL_BYTES
            too_long = nxt[1] - events[call[0]][1] >= MAX_SPAN_MS
            assert full or too_big or too_long, "a call was cut while the next event fitted"


def test_the_limits_are_the_documented_ones():
    assert (MAX_CALL_BYTES, EVENT_OVERHEAD, MAX_CALL_EVENTS) == (1_048_576, 26, 10_000)
    assert (MAX_EVENT_BYTES, MAX_SPAN_MS) == (262_144, 86_400_000)
    # exactly at the limits: one call of 10,000 events, one of 1,048,576 bytes
    assert len(plan_calls([("s", 0, 0)] * 10_001).calls) == 2
    exact = MAX_CALL_BYTES // 4 - EVENT_OVERHEAD
    assert [len(c) for c in plan_calls([("s", 0, exact)] * 5).calls] == [4, 1]
    assert [
        len(c) for c in plan_calls([("s", 0, 0), ("s", MAX_SPAN_MS - 1, 0), ("s", MAX_SPAN_MS, 0)]).calls
    ] == [2, 1]


def test_rejected_log_events_info_names_exactly_those_events():
    # tooNew: from the index on; tooOld / expired: up to the index, which is included
    # (AWS documents it as exclusive, moto returns the last rejected one: see the module).
    assert rejected_indexes({"tooNewLogEventStartIndex": 3}, 5).keys() == {3, 4}
    assert rejected_indexes({"tooOldLogEventEndIndex": 1}, 5).keys() == {0, 1}
    assert rejected_indexes({"expiredLogEventEndIndex": 0}, 5).keys() == {0}
    assert rejected_indexes({"tooOldLogEventEndIndex": 5}, 5).keys() == {0, 1, 2, 3, 4}
    both = rejected_indexes({"tooOldLogEventEndIndex": 0, "tooNewLogEventStartIndex": 4}, 5)
    assert both.keys() == {0, 4} and "too old" in both[0] and "too new" in both[4]
    assert rejected_indexes({}, 5) == {}
