"""A minimal signed gRPC client for emulator tests: every page and error visible.

The SDK hides pages, retries and error details; these tests need all three.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from auditstream.emulator import Emulator
from auditstream.sdm import signing
from auditstream.sdm.registry import REPLAY_CHUNKS, STREAMS, StreamSpec


def spec_of(stream: str) -> StreamSpec:
    """A registry stream, or ``"replay_chunks"``: Replays.List (``registry.REPLAY_CHUNKS``)."""
    return REPLAY_CHUNKS if stream == REPLAY_CHUNKS.name else STREAMS[stream]


@dataclass
class Listing:
    stream: str
    pages: list[Any] = field(default_factory=list)

    @property
    def records(self) -> list[Any]:
        return [r for p in self.pages for r in getattr(p, spec_of(self.stream).records_field)]

    def keys(self) -> Counter[str]:
        spec = STREAMS[self.stream]
        return Counter(spec.record_key(r) for r in self.records)

    def page_times(self) -> list[list[int]]:
        spec = STREAMS[self.stream]
        return [[spec.record_time_ns(r) for r in getattr(p, spec.records_field)] for p in self.pages]


def build_request(stream: str, filter_text: str = "", limit: int = 0, cursor: str = "") -> Any:
    request = spec_of(stream).request_class(filter=filter_text)
    request.meta.limit = limit
    request.meta.cursor = cursor
    return request


def signed_metadata(emu: Emulator, stream: str, request: Any, secret: bytes | None = None) -> Any:
    return signing.request_metadata(
        emu.options.access_key,
        emu.options.secret if secret is None else secret,
        spec_of(stream).signing_name,
        request.SerializeToString(),
    )


class RawClient:
    """``async with RawClient(emu) as client: await client.list(...)``"""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.channel = grpc.aio.insecure_channel(emu.address)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def call(self, stream: str, request: Any, metadata: Any, rpc_timeout: float = 10.0) -> Any:
        spec = spec_of(stream)
        method = self.channel.unary_unary(
            spec.method_path,
            request_serializer=spec.request_class.SerializeToString,
            response_deserializer=spec.response_class.FromString,
        )
        return await method(request, metadata=metadata, timeout=rpc_timeout)

    async def list(
        self,
        stream: str,
        *,
        filter_text: str = "",
        limit: int = 0,
        cursor: str = "",
        rpc_timeout: float = 10.0,
    ) -> Any:
        request = build_request(stream, filter_text, limit, cursor)
        return await self.call(stream, request, signed_metadata(self.emu, stream, request), rpc_timeout)

    async def list_all(
        self, stream: str, *, filter_text: str = "", limit: int = 0, max_pages: int = 100_000
    ) -> Listing:
        listing = Listing(stream)
        cursor = ""
        for _ in range(max_pages):
            response = await self.list(stream, filter_text=filter_text, limit=limit, cursor=cursor)
            listing.pages.append(response)
            cursor = response.meta.next_cursor
            if not cursor:
                return listing
        raise AssertionError(f"listing {stream} did not end within {max_pages} pages")


async def list_all(emu: Emulator, stream: str, *, filter_text: str = "", limit: int = 0) -> Listing:
    async with RawClient(emu) as client:
        return await client.list_all(stream, filter_text=filter_text, limit=limit)


def rfc3339(ns: int) -> str:
    """Nanosecond RFC 3339 in UTC, the form a careful client sends."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
