"""Every Prometheus metric auditstream exports, defined once.

Names follow Prometheus conventions: ``auditstream_`` prefix, ``_total`` for counters,
base units (seconds, bytes) in the name, ``_timestamp_seconds`` for Unix times. Every name
here is documented in docs/operations.md and used by deploy/grafana and deploy/prometheus;
tests fail when those drift apart, so rename nothing lightly.

Most metrics are updated where things happen. A few describe a *state* that changes by
itself as time passes (lag grows while nothing moves) or that lives in another object
(sink health, readiness); those are computed at scrape time by :class:`StatusCollector`
from a :class:`StatusSnapshot`, so a stuck daemon shows its lag rising instead of the last
value it happened to set.

``/metrics`` is rendered by :func:`exposition`: every label value and help text scrubbed of
secrets. No label here is meant to hold one (labels are stream, sink and bucket names, gRPC
codes), but label values come from many places and a scrape is served to whoever can reach
the port.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auditstream import __version__
from auditstream.ops.secrets import active, redact

# ``*_created`` series double the count of every labelled counter and no dashboard or alert
# here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

BUILD_INFO = Info("auditstream_build", "Version of the running auditstream and of its Python.")
BUILD_INFO.info({"version": __version__, "python": platform.python_version()})

# -- the API side -----------------------------------------------------------------------

RECORDS_FETCHED = Counter(
    "auditstream_records_fetched_total", "Records listed from the StrongDM API (before dedupe).", ["stream"]
)
RECORDS_DUPLICATE = Counter(
    "auditstream_records_duplicate_total",
    "Records listed again inside the overlap window and dropped as already delivered.",
    ["stream"],
)
API_REQUESTS = Counter(
    "auditstream_api_requests_total",
    "StrongDM API List calls by stream and gRPC status code (OK for a success).",
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
API_BUDGET_CALLS = Gauge(
    "auditstream_api_budget_calls_last_minute",
    "StrongDM API calls this process made over the last minute (see [source] calls_per_minute).",
)
API_BUDGET_CEILING = Gauge(
    "auditstream_api_budget_calls_per_minute",
    "This process's ceiling on StrongDM API calls per minute ([source] calls_per_minute).",
)
POLL_ERRORS = Counter(
    "auditstream_poll_errors_total", "Poll cycles that failed (and will be retried).", ["stream"]
)
WATERMARKS_PULLED_BACK = Counter(
    "auditstream_watermarks_pulled_back_total",
    "Checkpointed watermarks found ahead of the API's clock at start and pulled back (re-listed).",
    ["stream"],
)
NORMALIZATION_ERRORS = Counter(
    "auditstream_normalization_errors_total",
    "Records that could not be normalized and were sent raw (base64 protobuf) instead.",
    ["stream"],
)

# -- delivery ---------------------------------------------------------------------------

QUERIES_DECRYPTED = Counter(
    "auditstream_queries_decrypted_total",
    "Encrypted query records by outcome: decrypted; no_key (no [normalize] log_private_key_file, "
    "delivered as received); failed (wrong key or corrupt body, delivered with decryptionError).",
    ["stream", "outcome"],
)
EVENTS_MASKED = Counter(
    "auditstream_events_masked_total",
    "Events in which secret masking replaced at least one credential (see maskedSecrets).",
    ["stream"],
)
RECORDS_DELIVERED = Counter(
    "auditstream_records_delivered_total", "Records acknowledged by a sink.", ["stream", "sink"]
)
RECORDS_FAILED = Counter(
    "auditstream_records_failed_total",
    "Records a sink failed to deliver (kept and retried, never dropped).",
    ["stream", "sink"],
)
RECORDS_DEAD_LETTERED = Counter(
    "auditstream_records_dead_lettered_total",
    "Records a sink rejected permanently, written to its dead-letter file.",
    ["sink"],
)
LAST_DELIVERY = Gauge(
    "auditstream_last_delivery_timestamp_seconds",
    "Unix time when every sink routed for the stream last acknowledged a batch of it.",
    ["stream"],
)
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
QUEUE_DEPTH = Gauge(
    "auditstream_queue_depth_batches", "Batches fetched and waiting for delivery.", ["stream"]
)
CHECKPOINT_WRITES = Counter("auditstream_checkpoint_writes_total", "Checkpoint files written durably.")

# -- long-running queries ---------------------------------------------------------------

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

# -- state computed at scrape time ------------------------------------------------------

SINK_STATES = ("ok", "retrying", "failed")


@dataclass(frozen=True)
class StatusSnapshot:
    """The daemon's state at one instant, as :class:`StatusCollector` exports it."""

    watermarks: Mapping[str, float] = field(default_factory=dict)  # stream -> Unix seconds
    lag: Mapping[str, float] = field(default_factory=dict)  # stream -> seconds behind now
    sinks: Mapping[str, str] = field(default_factory=dict)  # sink -> one of SINK_STATES
    ready: bool = False
    authenticated: bool = False
    credentials_rejected: bool = False
    clock_skew: float | None = None  # host clock minus the API's, seconds; None before any answer


StatusSource = Callable[[], StatusSnapshot]


class StatusCollector(Collector):
    """Gauges read from the running daemon at every scrape (see the module docstring)."""

    def __init__(self) -> None:
        self._source: StatusSource | None = None

    def set_source(self, source: StatusSource | None) -> None:
        """The running daemon's status, or None when no daemon runs in this process."""
        self._source = source

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        return {
            "lag": gauge(
                "auditstream_checkpoint_lag_seconds",
                "Now minus the stream's checkpointed watermark, computed at scrape time.",
                ["stream"],
            ),
            "watermark": gauge(
                "auditstream_checkpoint_watermark_timestamp_seconds",
                "The stream's watermark (everything before it is delivered) as a Unix time.",
                ["stream"],
            ),
            "sink": gauge(
                "auditstream_sink_state",
                "1 for the sink's current health state (ok, retrying, failed), 0 for the others.",
                ["sink", "state"],
            ),
            "ready": gauge("auditstream_ready", "1 when /readyz answers 200, 0 otherwise."),
            "skew": gauge(
                "auditstream_clock_skew_seconds",
                "System clock minus the StrongDM API's clock as far as its answers show (positive: ahead).",
            ),
            "auth": gauge(
                "auditstream_api_authenticated",
                "1 once a StrongDM API call succeeded with the configured key, 0 before and after a refusal.",
            ),
            "rejected": gauge(
                "auditstream_api_credentials_rejected",
                "1 when the API refused the key (UNAUTHENTICATED, PERMISSION_DENIED) and the daemon stopped.",
            ),
        }

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        source = self._source
        if source is None:
            return
        snapshot = source()
        families = self._families()
        for stream, seconds in sorted(snapshot.lag.items()):
            families["lag"].add_metric([stream], seconds)
        for stream, unix in sorted(snapshot.watermarks.items()):
            families["watermark"].add_metric([stream], unix)
        for sink, current in sorted(snapshot.sinks.items()):
            for state in SINK_STATES:
                families["sink"].add_metric([sink, state], 1.0 if state == current else 0.0)
        families["ready"].add_metric([], 1.0 if snapshot.ready else 0.0)
        if snapshot.clock_skew is not None:
            families["skew"].add_metric([], snapshot.clock_skew)
        families["auth"].add_metric([], 1.0 if snapshot.authenticated else 0.0)
        families["rejected"].add_metric([], 1.0 if snapshot.credentials_rejected else 0.0)
        yield from families.values()


STATUS = StatusCollector()
REGISTRY.register(STATUS)


class _Scrubbed(CollectorRegistry):
    """``source``'s metrics with every label value and help text scrubbed of secrets."""

    def __init__(self, source: CollectorRegistry) -> None:
        super().__init__(auto_describe=False)
        self._source = source

    def collect(self) -> Iterator[Metric]:
        seen: dict[str, str] = {}  # label values repeat across series: scrub each once

        def clean(text: str) -> str:
            if text not in seen:
                seen[text] = redact(text)
            return seen[text]

        for metric in self._source.collect():
            copy = Metric(metric.name, clean(metric.documentation), metric.type, metric.unit)
            copy.samples = [
                sample._replace(labels={name: clean(value) for name, value in sample.labels.items()})
                for sample in metric.samples
            ]
            yield copy


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """What ``/metrics`` serves: the text format, scrubbed of secrets."""
    return generate_latest(_Scrubbed(registry) if active() else registry)


def initialize_series(routes: Mapping[str, Iterable[str]], sinks: Iterable[str]) -> None:
    """Create every stream/sink series at 0 before anything happens.

    A labelled series that does not exist yet is not 0 to Prometheus, it is absent:
    ``rate()`` and ``increase()`` over a restart then miss the first events, and "nothing
    delivered for hours" cannot be told from "never scraped". ``routes`` maps each stream to
    the sinks that take it.
    """
    for sink in sinks:
        for counter in (RECORDS_DEAD_LETTERED, SINK_REQUESTS, SINK_BYTES, SINK_RETRIES):
            counter.labels(sink)
    for stream, routed in routes.items():
        for counter in (
            RECORDS_FETCHED,
            RECORDS_DUPLICATE,
            POLL_ERRORS,
            NORMALIZATION_ERRORS,
            WATERMARKS_PULLED_BACK,
        ):
            counter.labels(stream)
        QUEUE_DEPTH.labels(stream)
        for sink in routed:
            RECORDS_DELIVERED.labels(stream, sink)
            RECORDS_FAILED.labels(stream, sink)
        API_REQUESTS.labels(stream, "OK")


@dataclass(frozen=True)
class MetricInfo:
    """One exported metric family, as documented in docs/operations.md."""

    name: str  # the family name (a counter's without ``_total``)
    type: str  # counter, gauge, histogram, info
    help: str
    labels: tuple[str, ...]

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this family."""
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("_count", "_sum"),
            "info": ("_info",),
        }
        return tuple(self.name + suffix for suffix in suffixes.get(self.type, ("",)))


def catalogue() -> list[MetricInfo]:
    """Every ``auditstream_`` metric family of this module, for docs and drift tests."""
    found: dict[str, MetricInfo] = {}
    for value in list(globals().values()):
        if isinstance(value, MetricWrapperBase):
            labels = tuple(value._labelnames)
            for metric in value.describe():
                found[metric.name] = MetricInfo(metric.name, metric.type, metric.documentation, labels)
    for family in StatusCollector._families().values():
        labels = tuple(getattr(family, "_labelnames", ()))
        found[family.name] = MetricInfo(family.name, family.type, family.documentation, labels)
    return sorted(found.values(), key=lambda info: info.name)
