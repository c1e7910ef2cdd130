"""A generic HTTP log receiver: ``POST /ingest`` with NDJSON (``application/x-ndjson`` or
``text/plain``, one item per line) or a JSON array (``application/json``), gzip or not.

Checks ``Authorization`` against ``expected_auth`` (401 otherwise). Fault switches:
``faults`` (statuses, Retry-After, slow), ``max_body`` (413 above it, measured after
inflating), ``reject_status`` + ``reject_when`` (answer a whole request with that status when
one of its items matches, e.g. 400 or 422: a request is taken whole or not at all),
``probe_failure`` (answer probes with that status), ``echo_authorization`` (every error body
is JSON quoting the request's ``Authorization`` header, as some collectors do). Items are
JSON values for NDJSON of JSON and for arrays; plain strings for NDJSON of CEF lines.
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
        self.probe_failure: int | None = None
        self.echo_authorization = False
        self.refused_sizes: list[int] = []  # items of each request refused with reject_status

    @property
    def url(self) -> str:
        return self.base_url + PATH

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._ingest)
        app.router.add_route("HEAD", PATH, self._probe)
        app.router.add_route("OPTIONS", PATH, self._probe)
        app.router.add_get(PATH, self._probe, allow_head=False)
        return app

    def _error(
        self, request: web.Request, status: int, text: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        """An error answer; with ``echo_authorization``, JSON quoting the credentials we got."""
        if not self.echo_authorization:
            return web.Response(status=status, text=text, headers=headers)
        body = {"error": text, "received_authorization": request.headers.get("Authorization")}
        return web.json_response(body, status=status, headers=headers)

    async def _probe(self, request: web.Request) -> web.Response:
        self.probes.append(request.method)
        if self.expected_auth is not None and request.headers.get("Authorization") != self.expected_auth:
            return self._error(request, 401, "bad credentials")
        if self.probe_failure is not None:
            return self._error(request, self.probe_failure, "probe refused")
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
            return self._error(request, 401, "bad credentials")
        if (status := self.faults.next_failure()) is not None:
            return self._error(request, status, "injected failure", self.failure_headers())
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzip_requests += 1
        body = await request.read()
        if self.max_body is not None and len(body) > self.max_body:
            return self._error(request, 413, "request entity too large")
        self.content_types.append(request.content_type)
        try:
            items = self.parse(body, request.content_type)
        except ValueError as exc:
            return self._error(request, 400, f"unparsable body: {exc}")
        if self.reject_when is not None and any(self.reject_when(item) for item in items):
            self.refused_sizes.append(len(items))
            return self._error(request, self.reject_status, "schema violation: poison item")
        await self.accept(items)
        return web.Response(status=204)
