"""Sink events -> Prometheus: the one observer the daemon hands every sink.

A sink's health state is not counted here: ``auditstream_sink_state`` is read from the sink
at scrape time (see :class:`~auditstream.ops.metrics.StatusCollector`), so it is exactly
what ``/readyz`` reports.
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
        log.warning("sink delivery failed; retrying", sink=sink, error=error)

    def dead_lettered(self, sink: str, count: int) -> None:
        metrics.RECORDS_DEAD_LETTERED.labels(sink).inc(count)
        log.error("records rejected permanently; written to the dead-letter file", sink=sink, records=count)

    def health_changed(self, sink: str, state: SinkState) -> None:
        log.info("sink health changed", sink=sink, state=state.value)
