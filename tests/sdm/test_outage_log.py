"""An unreachable API is said at once; a fault among successes is not an outage."""

from __future__ import annotations

import structlog.testing

from auditstream.sdm.client import OutageLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def events(captured: list[dict[str, object]]) -> list[str]:
    return [str(entry["event"]) for entry in captured]


def test_failing_from_the_start_is_said_at_the_first_failure_then_every_interval() -> None:
    clock = Clock()
    outages = OutageLog("api:443", interval=30.0, clock=clock)
    with structlog.testing.capture_logs() as captured:
        outages.failure(RuntimeError("connection refused"))
        clock.now += 10
        outages.failure(RuntimeError("connection refused"))
        clock.now += 25
        outages.failure(RuntimeError("connection refused"))
        outages.success()
    assert events(captured) == [
        "cannot reach the StrongDM API; retrying",
        "the StrongDM API is still unreachable; retrying",
        "the StrongDM API answers again",
    ]
    assert captured[1]["failed_calls"] == 3 and captured[2]["unreachable_seconds"] == 35


def test_faults_among_successes_are_not_an_outage_until_the_successes_stop() -> None:
    clock = Clock()
    outages = OutageLog("api:443", quiet=5.0, clock=clock)
    with structlog.testing.capture_logs() as captured:
        outages.success()
        clock.now += 1
        outages.failure(RuntimeError("INTERNAL"))
        outages.success()
        clock.now += 4
        outages.failure(RuntimeError("INTERNAL"))
        assert captured == []
        clock.now += 6
        outages.failure(RuntimeError("UNAVAILABLE"))
    assert events(captured) == ["cannot reach the StrongDM API; retrying"]
