"""Engine, API and sink events -> Prometheus: the one observer the daemon hands everything.

The engine, the API client and the sinks know nothing about Prometheus; this is the edge
where their events become metrics (ops.metrics defines them all). The delivery machinery
already logs each retry and dead letter (with the attempt, the delay, the reason and the
file), so this only counts them; it logs sink health transitions, which nothing else does.
A sink's health *state* is not exported from here: ``auditstream_sink_state`` is read from
the sink at scrape time (:class:`~auditstream.ops.metrics.StatusCollector`), so it is
exactly what ``/readyz`` says.
"""

from __future__ import annotations

import structlog

from auditstream.engine.observer import Observer
from auditstream.ops import metrics
from auditstream.sinks.base import SinkState

log = structlog.get_logger("auditstream.sink")


class PrometheusObserver(Observer):
    # -- the API client -------------------------------------------------------------------

    def api_call(self, stream: str, code: str, seconds: float) -> None:
        metrics.API_REQUESTS.labels(stream, code).inc()
        metrics.API_REQUEST_SECONDS.labels(stream).observe(seconds)

    def records_listed(self, stream: str, count: int) -> None:
        metrics.RECORDS_FETCHED.labels(stream).inc(count)

    def rate_limit_wait(self, bucket: str, seconds: float) -> None:
        metrics.RATE_LIMIT_WAITS.labels(bucket).inc()
        metrics.RATE_LIMIT_WAIT_SECONDS.labels(bucket).inc(seconds)

    def rate_limit_remaining(self, bucket: str, remaining: int) -> None:
        metrics.RATE_LIMIT_REMAINING.labels(bucket).set(remaining)

    def budget_used(self, calls_last_minute: int, per_minute: int) -> None:
        metrics.API_BUDGET_CALLS.set(calls_last_minute)
        metrics.API_BUDGET_CEILING.set(per_minute)

    # -- the engine -----------------------------------------------------------------------

    def duplicates_dropped(self, stream: str, count: int) -> None:
        metrics.RECORDS_DUPLICATE.labels(stream).inc(count)

    def poll_failed(self, stream: str) -> None:
        metrics.POLL_ERRORS.labels(stream).inc()

    def normalization_failed(self, stream: str) -> None:
        metrics.NORMALIZATION_ERRORS.labels(stream).inc()

    def queries_decrypted(self, stream: str, outcome: str, count: int) -> None:
        metrics.QUERIES_DECRYPTED.labels(stream, outcome).inc(count)

    def secrets_masked(self, stream: str, events: int) -> None:
        metrics.EVENTS_MASKED.labels(stream).inc(events)

    def queue_depth(self, stream: str, batches: int) -> None:
        metrics.QUEUE_DEPTH.labels(stream).set(batches)

    def sink_acknowledged(self, stream: str, sink: str, records: int, seconds: float) -> None:
        metrics.SINK_BATCH_SECONDS.labels(sink).observe(seconds)
        metrics.RECORDS_DELIVERED.labels(stream, sink).inc(records)

    def sink_failed(self, stream: str, sink: str, records: int) -> None:
        metrics.RECORDS_FAILED.labels(stream, sink).inc(records)

    def stream_delivered(self, stream: str) -> None:
        metrics.LAST_DELIVERY.labels(stream).set_to_current_time()

    def checkpoint_written(self) -> None:
        metrics.CHECKPOINT_WRITES.inc()

    def watermark_pulled_back(self, stream: str) -> None:
        metrics.WATERMARKS_PULLED_BACK.labels(stream).inc()

    def long_queries_open(self, count: int) -> None:
        metrics.LONG_QUERIES_OPEN.set(count)

    def long_queries_completed_by_recheck(self, count: int) -> None:
        metrics.LONG_QUERIES_COMPLETED_BY_RECHECK.inc(count)

    def long_query_recheck_round(self) -> None:
        metrics.LONG_QUERIES_RECHECK_ROUNDS.inc()

    def long_queries_expired(self, reason: str, count: int) -> None:
        metrics.LONG_QUERIES_EXPIRED.labels(reason).inc(count)

    # -- the sinks ------------------------------------------------------------------------

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
