"""Sink events -> Prometheus: the one observer the daemon hands every sink.

The delivery machinery already logs each retry and dead letter (with the attempt, the delay,
the reason and the file), so the observer only counts them; it logs health transitions,
which nothing else does. A sink's health *state* is not exported from here:
``auditstream_sink_state`` is read from the sink at scrape time (see
:class:`~auditstream.ops.metrics.StatusCollector`), so it is exactly what ``/readyz`` says.
"""

from __future__ import annotations

import structlog

from auditstream.ops import metrics
from auditstream.sinks.base import SinkState

log = structlog.get_logger("auditstream.sink")


class PrometheusSinkObserver:
    def request_sent(self, sink: str, events: int, nbytes: int, seconds: float) -> None:
        metrics.SINK_REQUESTS.labels(sink).inc()
        metrics.SINK_BYTES.labels(sink).inc(nbytes)

    def retried(self, sink: str, error: str) -> None:
        metrics.SINK_RETRIES.labels(sink).inc()

    def dead_lettered(self, sink: str, count: int) -> None:
        metrics.RECORDS_DEAD_LETTERED.labels(sink).inc(count)

    def health_changed(self, sink: str, state: SinkState) -> None:
        # Failed holds its streams back (and turns /readyz 503): worth an error line.
        emit = log.error if state is SinkState.FAILED else log.info
        emit("sink health changed", sink=sink, state=state.value)
