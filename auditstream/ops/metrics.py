"""Every Prometheus metric auditstream exports, defined once.

Names follow Prometheus conventions: ``auditstream_`` prefix, ``_total`` for counters,
base units (seconds, bytes) in the name.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from auditstream import __version__

BUILD_INFO = Info("auditstream_build", "Version of the running auditstream.")
BUILD_INFO.info({"version": __version__})

RECORDS_FETCHED = Counter(
    "auditstream_records_fetched_total", "Records listed from the StrongDM API (before dedupe).", ["stream"]
)
RECORDS_DUPLICATE = Counter(
    "auditstream_records_duplicate_total",
    "Records listed again inside the overlap window and dropped as already delivered.",
    ["stream"],
)
RECORDS_DELIVERED = Counter(
    "auditstream_records_delivered_total", "Records acknowledged by a sink.", ["stream", "sink"]
)
RECORDS_FAILED = Counter(
    "auditstream_records_failed_total",
    "Records a sink failed to deliver (will be retried).",
    ["stream", "sink"],
)
RECORDS_DEAD_LETTERED = Counter(
    "auditstream_records_dead_lettered_total",
    "Records a sink rejected permanently, written to its dead-letter file.",
    ["sink"],
)
API_REQUESTS = Counter(
    "auditstream_api_requests_total",
    "StrongDM API List calls by stream and gRPC status code.",
    ["stream", "code"],
)
API_REQUEST_SECONDS = Histogram(
    "auditstream_api_request_duration_seconds",
    "Latency of StrongDM API List calls.",
    ["stream"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_WAITS = Counter(
    "auditstream_rate_limit_waits_total", "Times a call waited for a rate-limit bucket to reset.", ["bucket"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "auditstream_rate_limit_wait_seconds_total", "Seconds spent waiting for rate-limit resets.", ["bucket"]
)
RATE_LIMIT_REMAINING = Gauge(
    "auditstream_rate_limit_remaining",
    "Requests remaining in the bucket, as last reported by the API.",
    ["bucket"],
)
CHECKPOINT_LAG = Gauge(
    "auditstream_checkpoint_lag_seconds", "Now minus the stream's checkpointed watermark.", ["stream"]
)
CHECKPOINT_WATERMARK = Gauge(
    "auditstream_checkpoint_watermark_seconds", "The stream's watermark as a Unix time.", ["stream"]
)
CHECKPOINT_WRITES = Counter("auditstream_checkpoint_writes_total", "Checkpoint files written durably.")
SINK_BATCH_SECONDS = Histogram(
    "auditstream_sink_batch_duration_seconds",
    "Time from handing a batch to a sink until it acknowledged it, retries included.",
    ["sink"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SINK_REQUESTS = Counter(
    "auditstream_sink_requests_total", "Requests (writes) a sink's receiver acknowledged.", ["sink"]
)
SINK_BYTES = Counter("auditstream_sink_bytes_total", "Bytes of encoded events a sink delivered.", ["sink"])
SINK_RETRIES = Counter(
    "auditstream_sink_retries_total", "Sink delivery attempts that failed and were retried.", ["sink"]
)
SINK_UP = Gauge("auditstream_sink_up", "1 when the sink is healthy, 0 while retrying or failed.", ["sink"])
QUEUE_DEPTH = Gauge(
    "auditstream_queue_depth_batches", "Batches fetched and waiting for delivery.", ["stream"]
)
NORMALIZATION_ERRORS = Counter(
    "auditstream_normalization_errors_total",
    "Records that could not be normalized and were sent raw (base64 protobuf) instead.",
    ["stream"],
)
POLL_ERRORS = Counter(
    "auditstream_poll_errors_total", "Poll cycles that failed (and will be retried).", ["stream"]
)
LONG_QUERIES_OPEN = Gauge(
    "auditstream_long_queries_open", "Long-running queries whose completion record is still awaited."
)
LONG_QUERIES_COMPLETED_BY_RECHECK = Counter(
    "auditstream_long_queries_completed_by_recheck_total",
    "Completion records of long-running queries found by re-listing around their start time.",
)
LONG_QUERIES_RECHECK_ROUNDS = Counter(
    "auditstream_long_queries_recheck_rounds_total", "Rounds of re-listing around open long-running queries."
)
LONG_QUERIES_EXPIRED = Counter(
    "auditstream_long_queries_expired_total",
    "Long-running queries given up on after long_query_horizon, or dropped at the open-set cap.",
    ["reason"],
)
