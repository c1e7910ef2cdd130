"""What the aiohttp receivers share: a fixed loopback port that survives stop/start (so a
sink sees "receiver down, then up"), optional TLS, fault switches, and request bookkeeping
that lets a test tell a retried request from a duplicate."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.helpers import free_port


@dataclass
class Faults:
    """Switches a test flips while a sink is sending.

    ``fail_with``: statuses to answer the next requests with, one each (e.g. 503, 503).
    ``retry_after``: ``Retry-After`` header on those failures.
    ``delay``: seconds to wait before answering (a slow receiver).
    ``delay_after_accept``: like ``delay`` but the request is accepted first, so a client
    that times out and retries produces a duplicate of that request (and only of it).
    """

    fail_with: deque[int] = field(default_factory=deque)
    retry_after: str | None = None
    delay: float = 0.0
    delay_after_accept: float = 0.0

    def next_failure(self) -> int | None:
        return self.fail_with.popleft() if self.fail_with else None


class AiohttpPeer:
    # False: handlers read request bodies as sent (gzip included), to enforce limits on both forms.
    auto_decompress = True

    def __init__(self, *, port: int | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.faults = Faults()
        self.requests: list[list[Any]] = []  # accepted requests, each a list of received items
        self.attempts = 0  # every request that reached a handler, accepted or not
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self.build_app(), handle_signals=False, access_log=None, auto_decompress=self.auto_decompress
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> AiohttpPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def slow_down(self) -> None:
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)  # the fault being simulated, not synchronisation

    async def accept(self, items: list[Any]) -> None:
        self.requests.append(items)
        if self.faults.delay_after_accept:
            await asyncio.sleep(self.faults.delay_after_accept)

    def failure_headers(self) -> dict[str, str]:
        return {"Retry-After": self.faults.retry_after} if self.faults.retry_after else {}

    @property
    def items(self) -> list[Any]:
        return [item for request in self.requests for item in request]


def without_retried_copies(requests: list[list[Any]]) -> list[list[Any]]:
    """Accepted requests minus exact copies of an earlier one (a retry after a lost answer).

    "Nothing duplicated except after a retried batch" means: after this, no item repeats."""
    seen: list[list[Any]] = []
    for request in requests:
        if request not in seen:
            seen.append(request)
    return seen
