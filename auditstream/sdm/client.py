"""Async, signed client for the StrongDM List endpoints of every audit stream.

One grpc.aio channel, TLS unless ``insecure`` is set explicitly, a deadline on every call,
each page signed afresh (the cursor changes the request bytes). Transient faults are
retried with exponential backoff and jitter; rate limits pause the whole bucket.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from auditstream.retrying import Backoff
from auditstream.sdm.apiclock import ApiClock
from auditstream.sdm.budget import CallBudget
from auditstream.sdm.errors import (
    ApiError,
    BadRequestError,
    RateLimitError,
    RateLimitInfo,
    TransientApiError,
    from_rpc_error,
)
from auditstream.sdm.observer import ApiObserver, NullApiObserver
from auditstream.sdm.ratelimit import RateLimitGate, Turn
from auditstream.sdm.registry import NANOS_PER_SECOND, REPLAY_CHUNKS, StreamKind, StreamSpec
from auditstream.sdm.signing import decode_secret, request_metadata

log = structlog.get_logger("auditstream.sdm")
MAX_RECONNECT_BACKOFF_MS = 5_000
REPLAY_PAGE_SIZE = 50


def format_time(ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, the most precise form the filter can carry."""
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def time_filter(after_ns: int, before_ns: int, extra: str = "") -> str:
    terms = [f'after:"{format_time(after_ns)}"', f'before:"{format_time(before_ns)}"']
    if extra:
        terms.append(extra)
    return " ".join(terms)


@dataclass(frozen=True)
class Page:
    records: list[Any]
    rate_limit: RateLimitInfo | None
    has_more: bool = False  # a cursor came back: the listing goes on
    # The response's size on the wire: what a page held ahead of delivery is counted as
    # (engine.prefetch.BufferBudget).
    size_bytes: int = 0


@dataclass(frozen=True)
class ClientSettings:
    endpoint: str
    access_key: str
    secret_key: str
    insecure: bool = False
    ca_file: Path | None = None
    page_size: int = 500
    timeout: float = 30.0
    max_transient_retries: int = 6
    max_rate_limit_wait: float = 300.0
    calls_per_minute: int = 2500
    retry_initial: float = 0.5
    retry_max: float = 30.0


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientApiError)


class OutageLog:
    """Says so when the API stops answering, again every ``interval`` while it stays away,
    and once when it answers again: an unreachable API is a log line within seconds, not
    after a stream has used up its retries, and 28 streams failing at once are one line.

    A failure while other calls still succeed (a fault here and there, retried) is not an
    outage: only failures with no success for ``quiet`` seconds, or before any success at
    all, are said.
    """

    def __init__(
        self,
        endpoint: str,
        interval: float = 30.0,
        quiet: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint
        self._interval = interval
        self._quiet = quiet
        self._clock = clock
        self._last_success: float | None = None
        self._since: float | None = None  # when the outage was first said
        self._last_said = 0.0
        self._failures = 0

    def failure(self, error: BaseException) -> None:
        now = self._clock()
        self._failures += 1
        if self._since is None:
            if self._last_success is not None and now - self._last_success < self._quiet:
                return  # the API answers other calls: a fault, retried
            self._since = self._last_said = now
            log.warning("cannot reach the StrongDM API; retrying", endpoint=self._endpoint, error=str(error))
        elif now - self._last_said >= self._interval:
            self._last_said = now
            log.warning(
                "the StrongDM API is still unreachable; retrying",
                endpoint=self._endpoint,
                unreachable_seconds=round(now - self._since),
                failed_calls=self._failures,
                error=str(error),
            )

    def success(self) -> None:
        now = self._clock()
        self._last_success = now
        if self._since is not None:
            log.info(
                "the StrongDM API answers again",
                endpoint=self._endpoint,
                unreachable_seconds=round(now - self._since),
                failed_calls=self._failures,
            )
            self._since = None
        self._failures = 0


class AuditClient:
    """List audit records page by page; share one per process (it owns the channel)."""

    def __init__(
        self,
        settings: ClientSettings,
        gate: RateLimitGate | None = None,
        clock: ApiClock | None = None,
        observer: ApiObserver | None = None,
    ) -> None:
        self._settings = settings
        self._secret = decode_secret(settings.secret_key)
        self._observer: ApiObserver = observer or NullApiObserver()
        self._gate = gate or RateLimitGate(max_wait=settings.max_rate_limit_wait, observer=self._observer)
        self.clock = clock or ApiClock()
        self.budget = CallBudget(settings.calls_per_minute)
        self.outages = OutageLog(settings.endpoint)
        self._bucket_of: dict[str, str] = {}
        # Streams whose service refused a time filter: listed whole, windowed here instead.
        self._unfiltered: set[str] = set()
        self._channel = self._open_channel()

    @property
    def access_key(self) -> str:
        return self._settings.access_key

    @property
    def gate(self) -> RateLimitGate:
        return self._gate

    def _open_channel(self) -> grpc.aio.Channel:
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # gRPC waits up to 120 s between reconnection attempts by default, and fails every
            # call at once meanwhile: an API back from an outage would sit unused for minutes.
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        if self._settings.insecure:
            return grpc.aio.insecure_channel(self._settings.endpoint, options=options)
        roots = None
        if self._settings.ca_file is not None:
            try:
                roots = self._settings.ca_file.read_bytes()
            except OSError as exc:
                raise ApiError(
                    f"cannot read [source] ca_file {self._settings.ca_file}: {exc.strerror}"
                ) from None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.aio.secure_channel(self._settings.endpoint, credentials, options=options)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AuditClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call_once(self, spec: StreamSpec, request: Any, wire: list[int] | None = None) -> Any:
        """One signed call; maps gRPC failures to typed errors and counts them. The response's
        size on the wire is appended to ``wire`` (free here; ``ByteSize`` costs ~0.2 ms a page)."""
        parse = spec.response_class.FromString
        if wire is not None:
            from_string = parse

            def parse(data: bytes) -> Any:
                wire.append(len(data))
                return from_string(data)

        method = self._channel.unary_unary(
            spec.method_path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=parse,
        )
        body = request.SerializeToString()
        metadata = request_metadata(self._settings.access_key, self._secret, spec.signing_name, body)
        started = time.monotonic()
        try:
            response = await method(request, metadata=metadata, timeout=self._settings.timeout)
        except grpc.aio.AioRpcError as err:
            self._observer.api_call(spec.name, err.code().name, time.monotonic() - started)
            raise from_rpc_error(
                err, access_key=self._settings.access_key, stream=spec.name, endpoint=self._settings.endpoint
            ) from None
        self._observer.api_call(spec.name, "OK", time.monotonic() - started)
        return response

    async def _call(
        self, spec: StreamSpec, request: Any, urgent: bool = True, wire: list[int] | None = None
    ) -> Any:
        """A call through the bucket's turns and pauses, with bounded transient retries.

        Each attempt takes its own turn, so tenacity's backoff sleeps outside it: a stream
        retrying a fault never holds up the streams queued behind it.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            wait=Backoff(self._settings.retry_initial, self._settings.retry_max),
            stop=stop_after_attempt(self._settings.max_transient_retries + 1),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.budget.take(urgent)
                self._observer.budget_used(self.budget.used_last_minute(), self.budget.per_minute)
                response = await self._call_granted(spec, request, wire)
        self.outages.success()
        return response

    def _before_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if error is not None:
            self.outages.failure(error)

    async def _call_granted(self, spec: StreamSpec, request: Any, wire: list[int] | None = None) -> Any:
        """Call until the rate limit lets the call through; other failures propagate.

        A caller refused on the free path leaves its turn to join the queue the refusal has
        just started (first come, first served); a queued one is served within its turn.
        """
        while True:
            async with self._gate.turn(self._bucket_of.get(spec.name)) as turn:
                response = await self._call_in_turn(spec, request, turn, wire)
                if response is not None:
                    return response

    async def _call_in_turn(
        self, spec: StreamSpec, request: Any, turn: Turn, wire: list[int] | None = None
    ) -> Any | None:
        """The calls one turn allows: the response, or None when refused and told to queue.

        Outcomes are reported to the gate inside the turn, so the next holder sees the pause
        they imply.
        """
        while True:
            try:
                response = await self._call_once(spec, request, wire)
            except RateLimitError as exc:
                self._observe_clock(exc.info)
                self._learn_bucket(spec, exc.info)
                self._gate.refused(exc.info)
                if await turn.keep(self._bucket_of.get(spec.name)):
                    continue
                return None
            info = RateLimitInfo.from_proto(response.rate_limit) if response.HasField("rate_limit") else None
            self._observe_clock(info)
            self.budget.observe(info, time.time())
            self._learn_bucket(spec, info)
            self._gate.observe(info, self._bucket_of.get(spec.name))
            return response

    def _observe_clock(self, info: RateLimitInfo | None) -> None:
        """Every answer's ``reset_at`` bounds the API's clock (sdm.apiclock)."""
        if info is not None:
            self.clock.observe_reset_at(info.reset_at_ns)

    def _learn_bucket(self, spec: StreamSpec, info: RateLimitInfo | None) -> None:
        """Remember the stream's bucket once the API names it, so it waits only on that one."""
        if info is not None and info.bucket:
            self._bucket_of[spec.name] = info.bucket

    async def pages(
        self, spec: StreamSpec, after_ns: int, before_ns: int, extra_filter: str = "", *, urgent: bool = True
    ) -> AsyncGenerator[Page, None]:
        """Every page of the records whose time lies between the bounds.

        Whether the bounds are inclusive, and in which order records come, is unknown:
        callers overlap their windows and dedupe by key rather than trust either. Catch-up
        work (``urgent=False``) yields the call budget to live work (sdm.budget).

        The filter grammar of ``ManagedSecrets.Logs`` is undocumented: if it refuses a time
        filter, that is said once, and from then on the stream is listed whole and the
        window applied here (inclusive at both ends: the caller's overlap and dedupe make
        that safe). Such a listing reports no further pages, so nothing is sized by it.
        """
        if spec.name not in self._unfiltered:
            filter_text = time_filter(after_ns, before_ns, extra_filter)
            listing = self._paged(spec, filter_text, self._settings.page_size, urgent)
            try:
                first = await anext(listing, None)
            except BadRequestError as exc:
                if not self._refuses_time_filter(spec, exc):
                    raise
            else:
                if first is not None:
                    yield first
                async for page in listing:
                    yield page
                return
        async for page in self._windowed_here(spec, after_ns, before_ns, urgent):
            yield page

    def _refuses_time_filter(self, spec: StreamSpec, exc: BadRequestError) -> bool:
        """Whether ``exc`` means the service does not take a time filter (said once)."""
        if spec.kind is not StreamKind.SECRET_LOG:
            return False
        if spec.name not in self._unfiltered:
            self._unfiltered.add(spec.name)
            log.warning(
                "the API refuses a time filter on this stream; listing it whole and keeping each "
                "window's records here (more calls per window, nothing missed)",
                stream=spec.name,
                error=str(exc),
            )
        return True

    async def _windowed_here(
        self, spec: StreamSpec, after_ns: int, before_ns: int, urgent: bool
    ) -> AsyncGenerator[Page, None]:
        time_of = spec.record_time_ns
        async for page in self._paged(spec, "", self._settings.page_size, urgent):
            kept = [r for r in page.records if after_ns <= time_of(r) <= before_ns]
            size = page.size_bytes * len(kept) // max(len(page.records), 1)
            yield Page(records=kept, rate_limit=page.rate_limit, has_more=False, size_bytes=size)

    async def _paged(
        self, spec: StreamSpec, filter_text: str, limit: int, urgent: bool
    ) -> AsyncGenerator[Page, None]:
        """Every page of one listing: each call signed afresh with the previous cursor."""
        request = spec.request_class()
        request.meta.limit = limit
        request.filter = filter_text
        while True:
            wire: list[int] = []
            response = await self._call(spec, request, urgent, wire)
            records = list(getattr(response, spec.records_field))
            self._observer.records_listed(spec.name, len(records))
            cursor = response.meta.next_cursor
            rate = RateLimitInfo.from_proto(response.rate_limit) if response.HasField("rate_limit") else None
            size = wire[-1] if wire else 0
            yield Page(records=records, rate_limit=rate, has_more=bool(cursor), size_bytes=size)
            if not cursor:
                return
            request.meta.cursor = cursor

    def replay_chunks(self, query_id: str, *, urgent: bool = False) -> AsyncGenerator[Page, None]:
        """Every page of one session's replay chunks (``Replays.List``, filter ``id:"<id>"``),
        in the API's order. Catch-up work by default: live polls go first. Pages hold at
        most ``REPLAY_PAGE_SIZE`` chunks: a chunk can be far larger than an audit record, and
        a page is what the replays poller holds in memory at once."""
        limit = min(self._settings.page_size, REPLAY_PAGE_SIZE)
        return self._paged(REPLAY_CHUNKS, f"id:{json.dumps(query_id)}", limit, urgent)

    async def probe(self, spec: StreamSpec) -> None:
        """One List call for at most one record of the last second: proves the endpoint and
        the key, and shows the API's clock (``reset_at``) before any window is computed."""
        request = spec.request_class()
        request.meta.limit = 1
        if spec.name not in self._unfiltered:
            now = self.clock.now_ns()
            request.filter = time_filter(now - NANOS_PER_SECOND, now)
            try:
                await self._call(spec, request)
                return
            except BadRequestError as exc:
                if not self._refuses_time_filter(spec, exc):
                    raise
            request.filter = ""
        await self._call(spec, request)

    async def list(
        self, spec: StreamSpec, after_ns: int, before_ns: int, extra_filter: str = ""
    ) -> AsyncIterator[Any]:
        """Record by record, over all pages."""
        async for page in self.pages(spec, after_ns, before_ns, extra_filter):
            for record in page.records:
                yield record
