"""The API clock: the host clock held between what the API's answers show of its own."""

from __future__ import annotations

from auditstream.sdm.apiclock import ApiClock
from auditstream.sdm.registry import NANOS_PER_SECOND as S

API_NOW = 1_800_000_000 * S


class Clocks:
    """A host wall clock ``skew`` away from the API's, and a monotonic clock both advance by."""

    def __init__(self, skew: int) -> None:
        self.mono = 5 * S
        self.skew = skew

    def api(self) -> int:
        return API_NOW + self.mono

    def wall(self) -> int:
        return self.api() + self.skew

    def clock(self) -> ApiClock:
        return ApiClock(wall=self.wall, monotonic=lambda: self.mono)


def test_without_answers_the_host_clock_is_all_there_is() -> None:
    clocks = Clocks(skew=600 * S)
    clock = clocks.clock()
    assert not clock.observed and clock.upper_ns() is None
    assert clock.now_ns() == clocks.wall()


def test_a_host_clock_ahead_is_held_a_rate_limit_window_before_the_announced_reset() -> None:
    """The reset may lie up to a minute after the API's now: a clock past it is taken back
    by that minute, never into the API's future (where a live window would leave a gap)."""
    clocks = Clocks(skew=600 * S)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)  # a bucket full again in a minute
    assert clock.now_ns() == clocks.api()
    clocks.mono += 30 * S  # the bound is carried forward by the monotonic clock
    assert clock.now_ns() == clocks.api()
    assert clock.skew_ns() == 600 * S
    clock.observe_record_time(clocks.api() - S)
    assert clock.now_ns() == clocks.api(), "records raise it no further than their own time"


def test_a_host_clock_a_hair_past_the_reset_is_taken_as_right() -> None:
    """A full bucket announces a reset at its now; a round trip later the host is past it."""
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() - S)
    assert clock.now_ns() == clocks.api() - S


def test_the_tightest_reset_wins() -> None:
    clocks = Clocks(skew=600 * S)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    clock.observe_reset_at(clocks.api() + 2 * S)
    clock.observe_reset_at(clocks.api() + 50 * S)
    assert clock.now_ns() == clocks.api() + 2 * S - 60 * S


def test_a_host_clock_behind_is_raised_to_the_newest_record_time() -> None:
    clocks = Clocks(skew=-600 * S)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    assert clock.now_ns() == clocks.wall(), "the upper bound alone cannot move a slow clock forward"
    clock.observe_record_time(clocks.api() - 3 * S)
    assert clock.now_ns() == clocks.api() - 3 * S
    clocks.mono += 10 * S
    assert clock.now_ns() == clocks.api() - 3 * S, "carried forward: the API's clock kept running"
    assert clock.skew_ns() == -597 * S
    assert clock.newest_record_ns == clocks.api() - 13 * S


def test_a_good_clock_is_left_alone() -> None:
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    clock.observe_record_time(clocks.api() - 2 * S)
    assert clock.now_ns() == clocks.wall()
    assert clock.skew_ns() == 0


def test_a_record_after_the_announced_reset_wins_over_it() -> None:
    """Contradicting bounds (a gateway's fast clock stamped the record): listing up to a
    record's own time skips nothing, so the lower bound wins."""
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 1 * S)
    clock.observe_record_time(clocks.api() + 5 * S)
    assert clock.now_ns() == clocks.api() + 5 * S


def test_absent_times_are_ignored() -> None:
    clocks = Clocks(skew=600 * S)
    clock = clocks.clock()
    clock.observe_reset_at(0)
    clock.observe_record_time(0)
    assert not clock.observed
    assert clock.now_ns() == clocks.wall()
