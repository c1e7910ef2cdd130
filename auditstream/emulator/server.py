"""The gRPC side: one handler per served stream (its spec's own method: ``List``, or
``Logs`` for ManagedSecrets) plus ``Replays.List``, as the real API answers.

Each call goes through, in order: added latency, signature check (UNAUTHENTICATED with a
status trailer), rate limiting (RESOURCE_EXHAUSTED with a packed RateLimitMetadata),
fault injection, request and filter parsing (INVALID_ARGUMENT), then one page from the
store. Handlers receive the raw request bytes: the signature covers exactly the bytes the
client serialized, so verifying them (rather than a re-serialization) is what the real
service must do too.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from auditstream.emulator.cursor import (
    CursorError,
    Listing,
    Position,
    decode_cursor,
    decode_offset_cursor,
    encode_cursor,
    encode_offset_cursor,
    tag,
)
from auditstream.emulator.faults import FaultInjector, FaultKind
from auditstream.emulator.filters import (
    Filter,
    FilterError,
    parse_filter,
    record_predicate,
    replay_query_id,
    unknown_field,
)
from auditstream.emulator.options import EmulatorOptions, Order, SecretLogsTimeFilter
from auditstream.emulator.pagination import read_page, start_listing
from auditstream.emulator.ratelimit import RateLimiter
from auditstream.emulator.stats import EmulatorStats
from auditstream.emulator.store import Store
from auditstream.sdm import signing
from auditstream.sdm.errors import status_trailer
from auditstream.sdm.registry import REPLAY_CHUNKS, SERVED_STREAM_NAMES, STREAMS, StreamKind, StreamSpec

if TYPE_CHECKING:
    from auditstream.emulator.data.replays import ReplayBook

NANOS = 1_000_000_000
PageFunction = Callable[[StreamSpec, Any], Any]


def scramble(records: list[tuple[int, bytes]], rng: random.Random) -> list[tuple[int, bytes]]:
    """Shuffle a page so it is in neither time order (when its times allow that).

    Two records with different times are always in one order or the other, so for two
    the guarantee is "not ascending"; from three distinct times on, neither direction.
    """
    times = [t for t, _ in records]
    if len(set(times)) < 2:
        return list(records)
    out = list(records)
    for _ in range(20):
        rng.shuffle(out)
        order = [t for t, _ in out]
        ascending = all(a <= b for a, b in itertools.pairwise(order))
        descending = all(a >= b for a, b in itertools.pairwise(order))
        if not ascending and not (descending and len(set(times)) > 2):
            return out
    ordered = sorted(records, key=lambda r: r[0])
    return [ordered[-1], *ordered[:-1]]


class ListService:
    """Serves ``/v1.<Service>/List`` for every stream from one store, and ``Replays.List``."""

    def __init__(
        self,
        store: Store,
        options: EmulatorOptions,
        stats: EmulatorStats,
        replays: ReplayBook | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self.stats = stats
        self.replays = replays
        self._secret = options.secret
        self._rng = random.Random(f"server:{options.seed}")
        self.limiter = RateLimiter(
            options.rate_limit, options.rate_limit_bucket, options.rate_limit_burst, reset_at=options.reset_at
        )
        self.faults = FaultInjector(options.fault_rate, self._rng)

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        handlers = [self._handler(STREAMS[name], self._page) for name in SERVED_STREAM_NAMES]
        handlers.append(self._handler(REPLAY_CHUNKS, self._replay_page))
        return handlers

    def _handler(self, spec: StreamSpec, page: PageFunction) -> grpc.GenericRpcHandler:
        service = spec.method_path.split("/")[1]  # with the package: "v1.Replays"
        handler = grpc.unary_unary_rpc_method_handler(
            self._bind(spec, page),
            request_deserializer=None,  # raw bytes: the signature covers them
            response_serializer=spec.response_class.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(service, {spec.method: handler})

    def _bind(self, spec: StreamSpec, page: PageFunction) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        async def list_handler(request: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await self.list(spec, request, context, page)

        return list_handler

    async def list(
        self,
        spec: StreamSpec,
        raw: bytes,
        context: grpc.aio.ServicerContext,
        page: PageFunction | None = None,
    ) -> Any:
        self.stats.requests_total[spec.name] += 1
        if self.options.latency_ms:
            await asyncio.sleep(self.options.latency_ms / 1000)
        access_key = await self._authenticate(spec, raw, context)
        decision = self.limiter.check(access_key)
        if not decision.allowed:
            self.stats.rate_limited += 1
            await _abort(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded", decision.metadata
            )
        await self._maybe_fault(context)
        try:
            request = spec.request_class.FromString(raw)
        except DecodeError:
            await self._invalid(context, "the request is not a valid protobuf message")
        try:
            response = (page or self._page)(spec, request)
        except (FilterError, CursorError) as exc:
            await self._invalid(context, str(exc))
        response.rate_limit.CopyFrom(decision.metadata)
        self.stats.pages_served[spec.name] += 1
        self.stats.records_served[spec.name] += len(getattr(response, spec.records_field))
        return response

    async def _authenticate(self, spec: StreamSpec, raw: bytes, context: grpc.aio.ServicerContext) -> str:
        headers = {key: value for key, value in context.invocation_metadata() or ()}
        access_key = headers.get(signing.HEADER_ACCESS_KEY)
        signature = headers.get(signing.HEADER_SIGNATURE)
        problem = None
        if not access_key or not signature:
            problem = "missing authentication headers"
        elif access_key != self.options.access_key:
            problem = "invalid access key"
        elif not isinstance(signature, str) or not signing.verify(
            self._secret, spec.signing_name, raw, signature
        ):
            problem = "invalid signature"
        if problem is not None:
            self.stats.unauthenticated += 1
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"authentication failed: {problem}")
        assert isinstance(access_key, str)
        return access_key

    async def _maybe_fault(self, context: grpc.aio.ServicerContext) -> None:
        kind = self.faults.draw()
        if kind is None:
            return
        self.stats.faults[kind.value] += 1
        if kind is FaultKind.UNAVAILABLE:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "service temporarily unavailable")
        if kind is FaultKind.UNAVAILABLE_NO_TRAILER:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream connect error or disconnect/reset")
        if kind is FaultKind.INTERNAL:
            await _abort(context, grpc.StatusCode.INTERNAL, "internal error")
        await asyncio.sleep(self.options.slow_fault_seconds)
        await _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "upstream request timeout")

    async def _invalid(self, context: grpc.aio.ServicerContext, message: str) -> NoReturn:
        self.stats.invalid_requests += 1
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, message)

    def _page_size(self, request: Any) -> tuple[int, int]:
        """``(limit, want)``: the page size asked for (0: the default, capped at the maximum),
        and how many records this page will really hold (fewer under ``short_pages``)."""
        options = self.options
        limit = request.meta.limit if request.meta.limit > 0 else options.default_page_size
        limit = min(limit, options.max_page_size)
        want = limit
        if options.short_pages and self._rng.random() < options.short_pages:
            want = self._rng.randrange(0, limit)
        return limit, want

    def _page(self, spec: StreamSpec, request: Any) -> Any:
        options = self.options
        flt = parse_filter(request.filter)
        if (
            spec.kind is StreamKind.SECRET_LOG
            and options.secret_logs_time_filter is SecretLogsTimeFilter.REFUSED
            and (flt.after_ns is not None or flt.before_ns is not None)
        ):
            raise unknown_field(spec, "after" if flt.after_ns is not None else "before")
        predicate = record_predicate(flt, spec)
        limit, want = self._page_size(request)
        stream_tag, filter_tag = tag(spec.name), tag(request.filter)
        self.store.publish_due()
        stream = self.store.stream(spec.name)
        with self.store.lock:
            if request.meta.cursor:
                listing, position = decode_cursor(
                    request.meta.cursor, stream_tag=stream_tag, filter_tag=filter_tag
                )
            else:
                listing, position = self._new_listing(spec, flt, limit, stream_tag, filter_tag), Position()
            page = read_page(
                stream,
                listing,
                position,
                want=want,
                predicate=predicate,
                max_bytes=options.max_response_bytes,
                scan_budget=max(10_000, 20 * limit),
            )
        records = page.records  # traversal order: sorted under newest/oldest
        if options.shuffle_pages:
            records = scramble(records, self._rng)
        elif options.order is Order.UNORDERED:  # a page may straddle buckets: sort it explicitly
            records = sorted(records, key=lambda record: record[0])
        response = spec.response_class()
        repeated = getattr(response, spec.records_field)
        for _, payload in records:
            repeated.add().MergeFromString(payload)
        if page.next_position is not None:
            response.meta.next_cursor = encode_cursor(listing, page.next_position)
        return response

    def _replay_page(self, spec: StreamSpec, request: Any) -> Any:
        """One page of a session's chunks, in order; none for an unknown or open session.

        A session's chunks are listed once its completion record is visible (the recording
        is finished); they never change after that, so a cursor is an offset.
        """
        query_id = replay_query_id(request.filter)
        _, want = self._page_size(request)
        stream_tag, filter_tag = tag(spec.name), tag(request.filter)
        offset = 0
        if request.meta.cursor:
            offset = decode_offset_cursor(request.meta.cursor, stream_tag=stream_tag, filter_tag=filter_tag)
        self.store.publish_due()
        with self.store.lock:
            completed = self.store.stream("queries").has_key(query_id)
        chunks = self.replays.wire_chunks(query_id) if completed and self.replays is not None else []
        response = spec.response_class()
        size = 0
        end = offset
        while end < len(chunks) and end - offset < want:
            if end > offset and size + len(chunks[end]) > self.options.max_response_bytes:
                break
            response.chunks.add().MergeFromString(chunks[end])
            size += len(chunks[end])
            end += 1
        if end < len(chunks):
            response.meta.next_cursor = encode_offset_cursor(stream_tag, filter_tag, end)
        return response

    def _new_listing(
        self, spec: StreamSpec, flt: Filter, limit: int, stream_tag: int, filter_tag: int
    ) -> Listing:
        options = self.options
        lo, hi = flt.window(options.after_bound, options.before_bound)
        if spec.kind is StreamKind.ACTIVITY and flt.after_ns is None:
            # documented: "If not provided, one week back of activities will be returned"
            end = flt.before_ns if flt.before_ns is not None else time.time_ns()
            lo = end - int(options.activities_default_window_seconds * NANOS)
        return start_listing(
            self.store.stream(spec.name),
            snapshot=self.store.seq,
            window=(lo, hi),
            order=options.order,
            salt=self._rng.getrandbits(32),
            page_size=limit,
            stream_tag=stream_tag,
            filter_tag=filter_tag,
        )


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, *details: object
) -> NoReturn:
    """Fail the call with exactly one ``grpc-status-details-bin`` trailer, as the API does."""
    await context.abort(code, message, trailing_metadata=status_trailer(code, message, *details))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
