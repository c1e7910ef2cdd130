"""The one backoff rule: exponential steps with equal jitter, a receiver's request honoured."""

from __future__ import annotations

import tenacity

from auditstream.retrying import Backoff


class Asked(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


def state_after(attempt: int, error: BaseException) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_steps_double_up_to_the_maximum_with_half_of_each_fixed() -> None:
    low, high = Backoff(0.5, 30.0, rng=lambda: 0.0), Backoff(0.5, 30.0, rng=lambda: 0.999999)
    assert [low.delay(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]
    assert [round(high.delay(n), 3) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert low.delay(30) == 15.0 and round(high.delay(30), 3) == 30.0


def test_a_delay_the_receiver_asked_for_wins_within_a_cap() -> None:
    backoff = Backoff(0.5, 30.0, rng=lambda: 0.0)
    assert backoff(state_after(1, Asked(7.0))) == 7.0
    assert backoff(state_after(1, Asked(86_400.0))) == 600.0
    assert backoff(state_after(1, Asked(-3.0))) == 0.0
    assert backoff(state_after(3, Asked(None))) == 1.0
    assert backoff(state_after(3, RuntimeError("no request"))) == 1.0
