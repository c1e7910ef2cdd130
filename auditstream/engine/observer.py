"""What the engine reports about its streams, for whoever watches (Prometheus, tests).

The engine knows nothing about metrics: the edge of the program (``ops``) passes an observer
that updates them. The protocol's methods do nothing, so an observer implements only what it watches;
:class:`NullEngineObserver` is the default.
"""

from __future__ import annotations

from typing import Protocol

from auditstream.sdm.observer import ApiObserver
from auditstream.sinks.observer import SinkObserver


class EngineObserver(Protocol):
    def duplicates_dropped(self, stream: str, count: int) -> None:
        """Re-listed records dropped because they were delivered already."""
        return None

    def poll_failed(self, stream: str) -> None:
        """A listing failed and will be retried."""
        return None

    def normalization_failed(self, stream: str) -> None:
        """A record could not be normalized and goes out raw."""
        return None

    def queries_decrypted(self, stream: str, outcome: str, count: int) -> None:
        """Encrypted query records by outcome: ``decrypted``, ``no_key`` (none configured,
        delivered as received) or ``failed`` (wrong key or corrupt body, delivered flagged)."""
        return None

    def secrets_masked(self, stream: str, events: int) -> None:
        """Events in which masking replaced at least one secret."""
        return None

    def queue_depth(self, stream: str, batches: int) -> None:
        """Batches listed and waiting for the sinks."""
        return None

    def sink_acknowledged(self, stream: str, sink: str, records: int, seconds: float) -> None:
        """A sink acknowledged a batch of ``stream`` after ``seconds`` (retries included)."""
        return None

    def sink_failed(self, stream: str, sink: str, records: int) -> None:
        """A sink failed a batch; it is kept and tried again."""
        return None

    def stream_delivered(self, stream: str) -> None:
        """Every sink routed for ``stream`` acknowledged a batch of it."""
        return None

    def checkpoint_written(self) -> None:
        """The checkpoint was written durably."""
        return None

    def watermark_pulled_back(self, stream: str) -> None:
        """A checkpointed watermark lay ahead of the API's clock and was pulled back."""
        return None

    def long_queries_open(self, count: int) -> None:
        """Long-running queries whose completion is awaited."""
        return None

    def long_queries_completed_by_recheck(self, count: int) -> None:
        """Completion records found by re-listing around their start time."""
        return None

    def long_query_recheck_round(self) -> None:
        """One round of re-listing around the open queries."""
        return None

    def long_queries_expired(self, reason: str, count: int) -> None:
        """Long-running queries given up on (``horizon``) or not tracked (``cap``)."""
        return None


class NullEngineObserver(EngineObserver):
    """Ignores everything: the default, for tests and embedders."""


class Observer(EngineObserver, ApiObserver, SinkObserver, Protocol):
    """Everything a running engine reports: its own events, its API client's and its sinks'."""


class NullObserver(Observer):
    """Ignores everything."""
