from hypothesis import given
from hypothesis import strategies as st

from auditstream.engine.window import WindowPolicy, is_finished, next_window

S = 1_000_000_000


def policy(**kw):
    base = {"overlap": 300, "settle": 10, "slice_": 3600}
    base.update(kw)
    return WindowPolicy.from_seconds(**base)


def test_live_window_reaches_now_minus_settle_and_reaches_back_by_overlap():
    w = next_window(1000 * S, 1100 * S, policy())
    assert w is not None
    assert w.start_ns == 700 * S
    assert w.end_ns == 1090 * S


def test_no_window_until_time_passes_the_settle_margin():
    assert next_window(1000 * S, 1010 * S, policy()) is None
    assert next_window(1000 * S, 1011 * S, policy()) is not None


def test_catch_up_is_cut_into_slices():
    w = next_window(0, 10 * 3600 * S, policy())
    assert w is not None and w.end_ns == 3600 * S


def test_backfill_floor_and_end():
    p = policy(floor_ns=5000 * S, end_ns=6000 * S)
    w = next_window(5000 * S, 10**6 * S, p)
    assert w is not None and w.start_ns == 5000 * S and w.end_ns == 6000 * S
    assert is_finished(6000 * S, p)
    assert next_window(6000 * S, 10**6 * S, p) is None


@given(
    watermark=st.integers(0, 10**12),
    steps=st.lists(st.integers(1, 10**11), min_size=1, max_size=30),
    overlap=st.integers(0, 1000),
    slice_=st.integers(1, 5000),
)
def test_consecutive_windows_cover_time_without_gaps(watermark, steps, overlap, slice_):
    """Whatever the cadence, each window starts at or before the previous end: no gap."""
    p = policy(overlap=overlap, settle=0, slice_=slice_)
    now = watermark
    for step in steps:
        now += step
        while (w := next_window(watermark, now, p)) is not None:
            assert w.start_ns <= watermark
            assert w.end_ns > watermark
            assert w.end_ns - watermark <= max(slice_, 1) * S
            watermark = w.end_ns
        assert watermark == now
