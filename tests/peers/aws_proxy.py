"""A tiny proxy in front of moto server that does what moto cannot: fail like AWS does.

Every request is forwarded to moto unless a fault switch says otherwise, and recorded
(``calls``: operation, headers, body, the status the client got) so a test can tell a
retried call from a duplicate. Switches, each applying to the next calls of one operation
(``PutObject``, ``UploadPart``, ``PutLogEvents``, ``AssumeRole``...):

* ``refuse[op]``: answer ``(status, code, message)`` instead of forwarding, in AWS's own error
  format (S3's XML, CloudWatch Logs' JSON), so botocore parses it as it would AWS's answer:
  ``ThrottlingException`` (moto never throttles), ``SlowDown``, ``AccessDenied``...;
* ``refuse_when``: a function of a call returning such an answer, or None to let it through
  (a refusal that depends on the content, e.g. InvalidParameterException for one event);
* ``lose_answer[op]``: forward (the call takes effect) then drop the connection, so the client
  never learns: its retry is the case "a retried upload must not create a second object";
* ``down``: drop every connection (the endpoint unreachable);
* ``cloudwatch_limits`` (on by default): answer ``InvalidParameterException``, as CloudWatch
  does, to a PutLogEvents call that breaks a documented limit moto does not check (10,000
  events, 1,048,576 bytes counting 26 per event, 256 KB per event, 24 hours per call).
"""

from __future__ import annotations

import json
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.peers.base import AiohttpPeer

MAX_CALL_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_CALL_EVENTS = 10_000
MAX_EVENT_BYTES = 256 * 1024
MAX_SPAN_MS = 24 * 3600 * 1000
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Call:
    operation: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None: the client got no answer
    answer: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def operation_of(request: web.Request, body: bytes = b"") -> str:
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    query_action = query_protocol_action(request, body)
    if query_action is not None:
        return query_action
    query = request.query
    is_object = len([p for p in request.path.split("/") if p]) > 1
    method = request.method
    if method == "HEAD":
        return "HeadObject" if is_object else "HeadBucket"
    if method == "PUT":
        if not is_object:
            return "CreateBucket"
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return f"{method} {request.path}"


def query_protocol_action(request: web.Request, body: bytes) -> str | None:
    """``Action`` of a query-protocol call (STS: ``AssumeRole``), None for any other request."""
    if request.method != "POST" or not request.content_type.startswith("application/x-www-form-urlencoded"):
        return None
    actions = urllib.parse.parse_qs(body.decode("utf-8", errors="replace")).get("Action")
    return actions[0] if actions else None


def cloudwatch_limit_broken(body: bytes) -> str | None:
    """What a PutLogEvents body breaks among the limits moto does not enforce."""
    events = json.loads(body).get("logEvents", [])
    sizes = [len(e["message"].encode("utf-8")) + EVENT_OVERHEAD for e in events]
    times = [e["timestamp"] for e in events]
    if len(events) > MAX_CALL_EVENTS:
        return f"{len(events)} events in one call (at most {MAX_CALL_EVENTS})"
    if sum(sizes) > MAX_CALL_BYTES:
        return f"{sum(sizes)} bytes in one call (at most {MAX_CALL_BYTES})"
    if any(size > MAX_EVENT_BYTES for size in sizes):
        return f"an event of {max(sizes)} bytes (at most {MAX_EVENT_BYTES})"
    if times and max(times) - min(times) > MAX_SPAN_MS:
        return "log events in a single PutLogEvents request cannot span more than 24 hours"
    return None


class AwsProxy(AiohttpPeer):
    def __init__(self, upstream: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upstream = upstream.rstrip("/")
        self.calls: list[Call] = []
        self.refuse: dict[str, deque[tuple[int, str, str]]] = defaultdict(deque)
        self.refuse_when: Callable[[Call], tuple[int, str, str] | None] | None = None
        self.lose_answer: dict[str, int] = defaultdict(int)
        self.down = False
        self.cloudwatch_limits = True
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint_url(self) -> str:
        return self.base_url

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def stop(self) -> None:
        await super().stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def of(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = operation_of(request, body)
        call = Call(operation, request.method, request.path_qs, dict(request.headers), body)
        self.calls.append(call)
        if self.down:
            return self._drop(request)
        refusal = self.refuse[operation].popleft() if self.refuse[operation] else None
        if refusal is None and self.refuse_when is not None:
            refusal = self.refuse_when(call)
        if refusal is not None:
            status, code, message = refusal
            call.status = status
            return self._error(request, status, code, message, call)
        if operation == "PutLogEvents" and self.cloudwatch_limits:
            broken = cloudwatch_limit_broken(body)
            if broken:
                call.status = 400
                return self._error(request, 400, "InvalidParameterException", broken, call)
        try:
            status, headers, answer = await self._forward(request, body)
        except aiohttp.ClientError:
            return self._drop(request)  # moto is down: so are we
        if self.lose_answer[operation] > 0:
            self.lose_answer[operation] -= 1
            return self._drop(request)
        call.status, call.answer = status, answer
        return web.Response(status=status, headers=headers, body=answer)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as response:
            answer = await response.read()
            kept = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
            return response.status, kept, answer

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client: its connection is gone

    @staticmethod
    def _error(request: web.Request, status: int, code: str, message: str, call: Call) -> web.Response:
        """An error as AWS writes it: JSON for CloudWatch Logs, the query protocol's XML for STS,
        XML for S3."""
        if request.headers.get("X-Amz-Target"):
            body = json.dumps({"__type": code, "message": message})
            content_type = "application/x-amz-json-1.1"
        elif query_protocol_action(request, call.body) is not None:
            body = f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
            body += "</Error><RequestId>proxy</RequestId></ErrorResponse>"
            content_type = "text/xml"
        else:
            body = f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code>"
            body += f"<Message>{message}</Message></Error>"
            content_type = "application/xml"
        call.answer = body.encode()
        return web.Response(status=status, body=body, content_type=content_type)
