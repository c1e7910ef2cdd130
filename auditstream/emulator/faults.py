"""Transient failures as a flaky service and the proxies in front of it produce them.

Never corrupts data: a fault replaces a whole response, it never alters one.
"""

from __future__ import annotations

import random
from enum import StrEnum


class FaultKind(StrEnum):
    UNAVAILABLE = "unavailable"  # the service itself: status trailer present
    UNAVAILABLE_NO_TRAILER = "unavailable_no_trailer"  # a proxy or load balancer: no trailer
    INTERNAL = "internal"
    SLOW = "slow"  # stalls, then DEADLINE_EXCEEDED (the client's own deadline may fire first)


FAULT_WEIGHTS: dict[FaultKind, float] = {
    FaultKind.UNAVAILABLE: 0.35,
    FaultKind.UNAVAILABLE_NO_TRAILER: 0.25,
    FaultKind.INTERNAL: 0.25,
    FaultKind.SLOW: 0.15,
}


class FaultInjector:
    def __init__(self, rate: float, rng: random.Random) -> None:
        self.rate = rate
        self._rng = rng
        self._kinds = list(FAULT_WEIGHTS)
        self._weights = list(FAULT_WEIGHTS.values())

    def draw(self) -> FaultKind | None:
        """The fault to inflict on this call, if any."""
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return None
        return self._rng.choices(self._kinds, self._weights)[0]
