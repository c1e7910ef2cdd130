"""Counters a test or benchmark reads to see what the emulator did to its client."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class EmulatorStats:
    """Updated on the server's event loop; plain ints, so reading from another thread is safe."""

    requests_total: Counter[str] = field(default_factory=Counter)  # per stream, every call
    pages_served: Counter[str] = field(default_factory=Counter)  # per stream, successful calls
    records_served: Counter[str] = field(default_factory=Counter)  # per stream
    rate_limited: int = 0
    unauthenticated: int = 0
    invalid_requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # per fault kind

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "requests_total": dict(self.requests_total),
            "pages_served": dict(self.pages_served),
            "records_served": dict(self.records_served),
            "rate_limited": self.rate_limited,
            "unauthenticated": self.unauthenticated,
            "invalid_requests": self.invalid_requests,
            "faults": dict(self.faults),
        }
