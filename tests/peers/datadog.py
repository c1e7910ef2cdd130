"""A Datadog Logs intake stand-in, strict to Datadog's API reference:

* "Send logs" (v2), https://docs.datadoghq.com/api/latest/logs/send-logs/ :
  ``POST /api/v2/logs`` with ``DD-API-KEY`` (401 when missing, 403 when not a valid key),
  ``Content-Type: application/json``, ``Content-Encoding: gzip`` optional; the body is a JSON
  array of log entries (or one entry) whose ``message`` is a string and whose reserved
  attributes ``ddsource``, ``ddtags``, ``hostname``, ``service`` are strings; at most 1,000
  entries and 5 MB uncompressed (read as 5,000,000 bytes, the stricter reading; 413 above
  either); 400 for a body that is not such JSON; 202 ``{}`` when accepted. Logs over 1 MB are
  accepted and truncated (recorded in ``truncated``), as the reference says.
* "Validate API key", https://docs.datadoghq.com/api/latest/authentication/#validate-api-key :
  ``GET /api/v1/validate`` -> 200 ``{"valid": true}``, 403 ``{"errors": ["Forbidden"]}``.

Fault switches: ``faults`` (statuses answered to the next requests, ``Retry-After``),
``reject_when`` (an entry predicate: the request is answered 400, nothing of it taken).
Intake and API answer on the same port here (``endpoint_url`` points at both).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.peers.base import AiohttpPeer

MAX_ENTRIES = 1_000
MAX_PAYLOAD = 5_000_000
MAX_LOG = 1_000_000
RESERVED = ("ddsource", "ddtags", "hostname", "service")


def _errors(status: int, *detail: str) -> web.Response:
    return web.json_response({"errors": list(detail)}, status=status)


class DatadogReceiver(AiohttpPeer):
    def __init__(self, *, api_key: str = "dd-test-api-key-0123456789abcdef", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.reject_when: Callable[[dict[str, Any]], bool] | None = None
        self.refused_sizes: list[int] = []
        self.truncated = 0
        self.gzip_requests = 0
        self.validations = 0

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.items

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events, parsed back from each accepted entry's ``message``."""
        return [json.loads(entry["message"]) for entry in self.items]

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v2/logs", self._logs)
        app.router.add_get("/api/v1/validate", self._validate)
        return app

    def _key_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("DD-API-KEY")
        if not key:
            return _errors(401, "Unauthorized: API key missing")
        if key != self.api_key:
            return _errors(403, "Forbidden")
        return None

    async def _validate(self, request: web.Request) -> web.Response:
        self.validations += 1
        if request.headers.get("DD-API-KEY") != self.api_key:
            return _errors(403, "Forbidden")
        return web.json_response({"valid": True})

    async def _logs(self, request: web.Request) -> web.Response:
        self.attempts += 1
        await self.slow_down()
        if (error := self._key_error(request)) is not None:
            return error
        if (status := self.faults.next_failure()) is not None:
            return web.json_response({"errors": ["injected"]}, status=status, headers=self.failure_headers())
        if request.content_type != "application/json":
            return _errors(400, f"unsupported content type {request.content_type}")
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzip_requests += 1
        body = await request.read()  # aiohttp has inflated gzip already
        if len(body) > MAX_PAYLOAD:
            return _errors(413, f"payload of {len(body):,} bytes is above 5MB uncompressed")
        try:
            value = json.loads(body)
        except ValueError:
            return _errors(400, "payload is not JSON")
        entries = value if isinstance(value, list) else [value]
        if len(entries) > MAX_ENTRIES:
            return _errors(413, f"{len(entries)} entries; at most {MAX_ENTRIES} per request")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("message"), str):
                return _errors(400, "every log entry needs a string message")
            if any(key in entry and not isinstance(entry[key], str) for key in RESERVED):
                return _errors(400, "ddsource, ddtags, hostname and service are strings")
        if self.reject_when is not None and any(self.reject_when(entry) for entry in entries):
            self.refused_sizes.append(len(entries))
            return _errors(400, "invalid log entry")
        self.truncated += sum(len(json.dumps(entry)) > MAX_LOG for entry in entries)
        await self.accept(entries)
        return web.json_response({}, status=202)
