"""A generic HTTP log receiver: ``POST /ingest`` with NDJSON (``application/x-ndjson`` or
``text/plain``, one item per line) or a JSON array (``application/json``), gzip or not.

Checks ``Authorization`` against ``expected_auth`` (401 otherwise). Fault switches:
``faults`` (statuses, Retry-After, slow), ``max_body`` (413 above it, measured after
inflating), ``reject_status`` + ``reject_when`` (answer a whole request with that status when
one of its items matches, e.g. 400 or 422). Items are JSON values for NDJSON of JSON and for
arrays; plain strings for NDJSON of CEF lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.peers.base import AiohttpPeer

PATH = "/ingest"


class HttpReceiver(AiohttpPeer):
    def __init__(self, *, expected_auth: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected_auth = expected_auth
        self.max_body: int | None = None
        self.reject_status = 400
        self.reject_when: Callable[[Any], bool] | None = None
        self.content_types: list[str] = []
        self.gzip_requests = 0
        self.probes: list[str] = []

    @property
    def url(self) -> str:
        return self.base_url + PATH

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._ingest)
        app.router.add_route("HEAD", PATH, self._probe)
        app.router.add_route("OPTIONS", PATH, self._probe)
        return app

    async def _probe(self, request: web.Request) -> web.Response:
        self.probes.append(request.method)
        if self.expected_auth is not None and request.headers.get("Authorization") != self.expected_auth:
            return web.Response(status=401)
        return web.Response(status=204)

    @staticmethod
    def parse(body: bytes, content_type: str) -> list[Any]:
        text = body.decode("utf-8")
        if content_type == "application/json":
            items = json.loads(text)
            if not isinstance(items, list):
                raise ValueError("expected a JSON array")
            return items
        lines = text.split("\n")
        if lines[-1] != "":
            raise ValueError("NDJSON must end with a newline")
        if content_type == "application/x-ndjson":
            return [json.loads(line) for line in lines[:-1]]
        return lines[:-1]

    async def _ingest(self, request: web.Request) -> web.Response:
        self.attempts += 1
        await self.slow_down()
        if self.expected_auth is not None and request.headers.get("Authorization") != self.expected_auth:
            return web.Response(status=401, text="bad credentials")
        if (status := self.faults.next_failure()) is not None:
            return web.Response(status=status, text="injected failure", headers=self.failure_headers())
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzip_requests += 1
        body = await request.read()
        if self.max_body is not None and len(body) > self.max_body:
            return web.Response(status=413, text="request entity too large")
        self.content_types.append(request.content_type)
        try:
            items = self.parse(body, request.content_type)
        except ValueError as exc:
            return web.Response(status=400, text=f"unparsable body: {exc}")
        if self.reject_when is not None and any(self.reject_when(item) for item in items):
            return web.Response(status=self.reject_status, text="schema violation: poison item")
        await self.accept(items)
        return web.Response(status=204)
