"""What the API client reports about its calls, for whoever watches (Prometheus, tests).

The StrongDM side knows nothing about metrics: the edge of the program (``ops``) passes an
observer that updates them. Every method of the protocol does nothing, so an observer that
subclasses it implements only what it watches; :class:`NullApiObserver` is the default.
"""

from __future__ import annotations

from typing import Protocol


class ApiObserver(Protocol):
    def api_call(self, stream: str, code: str, seconds: float) -> None:
        """A List call ended with gRPC status ``code`` (``OK`` for a success)."""
        return None

    def records_listed(self, stream: str, count: int) -> None:
        """A page brought ``count`` records (before dedupe)."""
        return None

    def rate_limit_wait(self, bucket: str, seconds: float) -> None:
        """Calls on ``bucket`` paused this long for its reset."""
        return None

    def rate_limit_remaining(self, bucket: str, remaining: int) -> None:
        """The API reported this many calls left in ``bucket``."""
        return None

    def budget_used(self, calls_last_minute: int, per_minute: int) -> None:
        """This process made ``calls_last_minute`` calls over the last minute, of its ceiling."""
        return None


class NullApiObserver(ApiObserver):
    """Ignores everything: the default, for tests and embedders."""
