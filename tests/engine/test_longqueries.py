from strongdm import queries_pb2

from auditstream.engine.checkpoint import StreamState
from auditstream.engine.dedupe import DeliveredKeys
from auditstream.engine.longqueries import LongQueryTracker
from auditstream.sdm.registry import STREAMS

S = 1_000_000_000
QUERIES = STREAMS["queries"]


def query(qid: str, start_s: int, completed_s: int | None = None):
    q = queries_pb2.Query(id=qid, query_body="ls")
    q.timestamp.seconds = start_s
    if completed_s is not None:
        q.completed_at.seconds = completed_s
    return q


def tracker(state, now=10_000 * S, horizon=3600.0, cap=100):
    return LongQueryTracker(state, recheck_interval=60, horizon=horizon, max_open=cap, clock=lambda: now)


def test_start_and_completion_have_different_keys_and_relist_times():
    start, done = query("q1", 100), query("q1", 100, 5000)
    assert QUERIES.record_key(start) != QUERIES.record_key(done)
    assert QUERIES.relist_time_ns(start) == 100 * S
    assert QUERIES.relist_time_ns(done) == 5000 * S


def test_open_query_tracked_until_its_completion_is_delivered():
    state = StreamState(watermark_ns=0)
    keys = DeliveredKeys(state.delivered)
    t = tracker(state)
    t.after_delivery([query("q1", 100), query("q2", 200, 210)], keys)
    assert t.open_ids == {"q1"}
    assert "q1" in state.open_queries, "the open set is part of the checkpointed state"
    keys.acknowledge([("q1", 5000 * S)])
    t.after_delivery([query("q1", 100, 5000)], keys)
    assert t.open_ids == set()


def test_start_record_seen_after_its_completion_is_not_tracked():
    state = StreamState(watermark_ns=0)
    keys = DeliveredKeys(state.delivered)
    keys.acknowledge([("q1", 5000 * S)])
    t = tracker(state)
    t.after_delivery([query("q1", 100)], keys)
    assert t.open_ids == set()


def test_recheck_windows_surround_start_times_and_merge_neighbours():
    state = StreamState(watermark_ns=10_000 * S)  # swept up to there
    keys = DeliveredKeys(state.delivered)
    t = tracker(state)
    t.after_delivery([query("a", 1000), query("b", 1010), query("c", 9000)], keys)
    windows = t.recheck_windows()
    assert len(windows) == 2
    assert windows[0].start_ns < 1000 * S and windows[0].end_ns > 1010 * S
    assert windows[1].start_ns < 9000 * S < windows[1].end_ns


def test_completions_in_a_recheck_listing_exclude_everything_else():
    state = StreamState(watermark_ns=0)
    keys = DeliveredKeys(state.delivered)
    t = tracker(state)
    t.after_delivery([query("open", 1000)], keys)
    listing = [query("open", 1000), query("open", 1000, 4000), query("other", 1000, 1001), query("x", 999)]
    found = t.completions_in(listing, keys)
    assert [QUERIES.record_key(r) for r in found] == ["open"]


def test_horizon_expires_and_cap_bounds_the_open_set():
    state = StreamState(watermark_ns=0)
    keys = DeliveredKeys(state.delivered)
    t = tracker(state, horizon=100.0, cap=2)
    t.after_delivery([query("a", 1000), query("b", 1050), query("c", 1060)], keys)
    assert t.open_ids == {"a", "b"}, "the cap keeps memory bounded"
    assert t.expire(1120 * S) == ["a"]
    assert t.open_ids == {"b"}


def test_only_sessions_the_sweep_has_passed_are_rechecked():
    """Ground after the sweep mark is listed once more by the sweep, which finds the
    completions of every session that ended by then: re-checking those sessions every minute
    re-read a busy stream's last minutes every minute."""
    state = StreamState(watermark_ns=9_500 * S, swept_ns=5_000 * S)
    keys = DeliveredKeys(state.delivered)
    t = tracker(state)
    t.after_delivery([query("old", 1000), query("young", 6000), query("younger", 9000)], keys)
    windows = t.recheck_windows()
    assert len(windows) == 1 and windows[0].start_ns < 1000 * S < windows[0].end_ns < 5_000 * S
    state.swept_ns = 7_000 * S  # the sweep passed the young one: it is re-checked from now on
    assert [w.start_ns < 6000 * S < w.end_ns for w in t.recheck_windows()] == [False, True]
