"""The API clock: the host clock held between what the API's answers show of its own."""

from __future__ import annotations

import structlog

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
    clock.observe_record_time(clocks.api() - S, "Activities")
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
    clock.observe_record_time(clocks.api() - 3 * S, "Activities")
    assert clock.now_ns() == clocks.api() - 3 * S
    clocks.mono += 10 * S
    assert clock.now_ns() == clocks.api() - 3 * S, "carried forward: the API's clock kept running"
    assert clock.skew_ns() == -597 * S
    assert clock.newest_record_ns == clocks.api() - 13 * S


def test_a_good_clock_is_left_alone() -> None:
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    clock.observe_record_time(clocks.api() - 2 * S, "Activities")
    assert clock.now_ns() == clocks.wall()
    assert clock.skew_ns() == 0


def test_a_record_after_the_announced_reset_is_held_to_it() -> None:
    """Contradicting bounds: the API has not reached a time after a reset it announced, so
    the record was stamped by a clock ahead of it (a gateway's). A window ending at the
    record's time would leave the on-time records up to it to the sweep, so the reset wins."""
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 1 * S)
    clock.observe_record_time(clocks.api() + 30 * S, "Queries")
    assert clock.now_ns("Queries") == clocks.api() + 1 * S
    assert clock.now_ns() == clocks.api() + 1 * S
    assert clock.skew_ns() == -1 * S


def test_one_sources_records_from_the_future_move_no_other_streams_now() -> None:
    """A gateway whose clock runs 30 s fast stamps queries; the API announces a bucket full
    again in a minute, which does not contradict them. Activities keep the API's time."""
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    clock.observe_record_time(clocks.api() - S, "Activities")
    clock.observe_record_time(clocks.api() + 30 * S, "Queries")
    clocks.mono += 10 * S
    assert clock.now_ns("Activities") == clocks.api()
    assert clock.now_ns("AccountsHistory") == clocks.api(), "a stream with no record of its own"
    assert clock.now_ns("Queries") == clocks.api() + 30 * S, "its own, within the reset bound"


def test_a_host_clock_behind_is_corrected_on_every_stream_once_two_sources_show_it() -> None:
    """Records of one source alone cannot tell a slow host from a fast gateway; two can, and
    then a stream with no fresh record of its own follows them too."""
    clocks = Clocks(skew=-600 * S)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    clock.observe_record_time(clocks.api() - 2 * S, "Queries")
    assert clock.now_ns("Queries") == clocks.api() - 2 * S
    assert clock.now_ns("AccountsHistory") == clocks.wall(), "one source alone moves only its own"
    clock.observe_record_time(clocks.api() - 3 * S, "Activities")
    assert clock.now_ns("AccountsHistory") == clocks.api() - 3 * S
    assert clock.now_ns("Queries") == clocks.api() - 2 * S


def warnings_of(captured: list[dict[str, object]]) -> list[str]:
    return [str(entry["event"]) for entry in captured if entry["log_level"] == "warning"]


def test_a_record_from_the_future_is_said_to_be_one_not_a_host_clock_behind() -> None:
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 1 * S)
    with structlog.testing.capture_logs() as captured:
        clock.observe_record_time(clocks.api() - S, "Activities")
        clock.observe_record_time(clocks.api() + 40 * S, "Queries")
        clock.observe_record_time(clocks.api() + 41 * S, "Queries")  # said once
    (said,) = warnings_of(captured)
    assert "stamped after the StrongDM API's clock" in said and "system clock is" not in said
    assert [e["source"] for e in captured] == ["Queries"]


def test_one_source_ahead_of_the_host_within_the_reset_bound_names_both_possible_causes() -> None:
    clocks = Clocks(skew=0)
    clock = clocks.clock()
    clock.observe_reset_at(clocks.api() + 60 * S)
    with structlog.testing.capture_logs() as captured:
        clock.observe_record_time(clocks.api() - S, "Activities")
        clock.observe_record_time(clocks.api() + 45 * S, "Queries")
    (said,) = warnings_of(captured)
    assert "the clock that stamped them (a gateway or relay) runs ahead" in said
    assert captured[0]["source"] == "Queries"


def test_a_host_clock_behind_or_ahead_is_said_to_be_the_hosts() -> None:
    behind = Clocks(skew=-600 * S)
    clock = behind.clock()
    clock.observe_reset_at(behind.api() + 60 * S)
    with structlog.testing.capture_logs() as captured:
        clock.observe_record_time(behind.api() - S, "Activities")
        clock.observe_record_time(behind.api() - 2 * S, "Queries")
    assert any("the system clock is behind" in said for said in warnings_of(captured)), captured
    ahead = Clocks(skew=600 * S)
    with structlog.testing.capture_logs() as captured:
        ahead.clock().observe_reset_at(ahead.api() + 60 * S)
    assert ["ahead of the StrongDM API's clock" in said for said in warnings_of(captured)] == [True]


def test_absent_times_are_ignored() -> None:
    clocks = Clocks(skew=600 * S)
    clock = clocks.clock()
    clock.observe_reset_at(0)
    clock.observe_record_time(0, "Activities")
    assert not clock.observed
    assert clock.now_ns() == clocks.wall()
