"""Hooks through which the shared delivery machinery reports what it does.

Sinks know nothing about Prometheus; the ops layer passes an observer that updates its
metrics. Every method of the protocol does nothing, so an observer that subclasses it
implements only what it watches; :class:`NullObserver` is the default.
"""

from __future__ import annotations

from typing import Protocol

from auditstream.sinks.base import SinkState


class SinkObserver(Protocol):
    def request_sent(self, sink: str, events: int, nbytes: int, seconds: float) -> None:
        """A request was acknowledged by the receiver (``seconds`` covers that attempt only)."""
        return None

    def retried(self, sink: str, error: str) -> None:
        """An attempt failed transiently and will be retried after a backoff."""
        return None

    def dead_lettered(self, sink: str, count: int) -> None:
        """``count`` events were rejected permanently and written to the dead-letter file."""
        return None

    def health_changed(self, sink: str, state: SinkState) -> None:
        """The sink's health moved to ``state``."""
        return None


class NullObserver(SinkObserver):
    """Ignores everything: the default, for tests and embedders."""
