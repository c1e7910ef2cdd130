"""A Splunk HTTP Event Collector stand-in that enforces the documented format and codes.

* ``POST /services/collector/event`` (also ``/services/collector``): ``Authorization:
  Splunk <token>`` (401 code 2 if missing, 401 code 3 for another scheme, 403 code 4 for a
  wrong token, 403 code 1 for a disabled one); a body of concatenated JSON objects (400
  code 5 if empty; code 6 with ``invalid-event-number`` for malformed JSON, a non-object,
  an unknown key, a non-numeric ``time``, non-string metadata or nested ``fields``; code 12
  without ``event``; code 13 for a blank one; code 7 for an index not in ``indexes``).
  Like Splunk, events are read in order and those before the first invalid one are indexed
  (recorded as an accepted request of their own) before the error is answered.
  ``names_invalid_event = False`` leaves ``invalid-event-number`` out and ``all_or_nothing``
  indexes nothing of a refused request: both as the OpenTelemetry Collector's HEC receiver.
* Indexer acknowledgement (``ack_enabled``): the channel header is required (code 10, or 11
  if not a GUID), a 200 carries ``ackId``; ``POST /services/collector/ack?channel=`` answers
  ``{"acks": {"N": true}}``; with acks off that endpoint answers code 14.
* ``GET /services/collector/health``: 200 code 17, 503 code 9 when ``busy``, 400 code 4 when
  an ``Authorization`` header carries a wrong token.

Fault switches: ``faults`` (statuses, Retry-After, slow), ``busy`` (503 code 9),
``reject_when`` (an event predicate answered with code 6 and its number),
``drop_next`` (accept N requests with an ackId that never comes true and index nothing),
``echo_authorization`` (every error's ``text`` quotes the request's ``Authorization`` header).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.peers.base import AiohttpPeer

EVENT_PATHS = ("/services/collector/event", "/services/collector", "/services/collector/event/1.0")
ENVELOPE_KEYS = {"time", "host", "source", "sourcetype", "index", "event", "fields"}


def _answer(
    status: int, code: int, text: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response({"text": text, "code": code, **extra}, status=status, headers=headers)


def parse_concatenated(body: str) -> tuple[list[Any], int | None]:
    """The JSON values of ``body`` one after another, and the index of the first bad one."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while True:
        while position < len(body) and body[position] in " \t\r\n":
            position += 1
        if position >= len(body):
            return values, None
        try:
            value, position = decoder.raw_decode(body, position)
        except json.JSONDecodeError:
            return values, len(values)
        values.append(value)


def _flat(value: Any) -> bool:
    scalar = (str, int, float)
    return isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )


class HecReceiver(AiohttpPeer):
    def __init__(self, *, token: str = "test-token", ack_enabled: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.disabled_tokens: set[str] = set()
        self.ack_enabled = ack_enabled
        self.indexes: set[str] | None = None
        self.busy = False
        self.reject_when: Callable[[dict[str, Any]], bool] | None = None
        self.drop_next = 0
        self.names_invalid_event = True
        self.all_or_nothing = False
        self.echo_authorization = False
        self.refused = 0  # requests answered with a bad-event code (6, 12, 13)
        self.gzip_requests = 0
        self.channels: set[str] = set()
        self._next_ack: dict[str, int] = {}
        self._acks: dict[tuple[str, int], bool] = {}

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted envelope, in order of arrival."""
        return self.items

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in EVENT_PATHS:
            app.router.add_post(path, self._event)
        app.router.add_post("/services/collector/ack", self._ack)
        app.router.add_get("/services/collector/health", self._health)
        app.router.add_get("/services/collector/health/1.0", self._health)
        return app

    def _error(
        self,
        request: web.Request,
        status: int,
        code: int,
        text: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> web.Response:
        if self.echo_authorization:
            text = f"{text} (request had Authorization: {request.headers.get('Authorization')})"
        return _answer(status, code, text, headers, **extra)

    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return self._error(request, 401, 2, "Token is required")
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            return self._error(request, 401, 3, "Invalid authorization")
        if token in self.disabled_tokens:
            return self._error(request, 403, 1, "Token disabled")
        if token != self.token:
            return self._error(request, 403, 4, "Invalid token")
        return None

    def _channel(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if not self.ack_enabled:
            return channel, None
        if not channel:
            return None, self._error(request, 400, 10, "Data channel is missing")
        try:
            uuid.UUID(channel)
        except ValueError:
            return None, self._error(request, 400, 11, "Invalid data channel")
        return channel, None

    def _check(self, envelope: Any) -> tuple[int, str] | None:
        """(code, text) when ``envelope`` is invalid, else None."""
        invalid = (6, "Invalid data format")
        if not isinstance(envelope, dict) or set(envelope) - ENVELOPE_KEYS:
            return invalid
        if "event" not in envelope:
            return 12, "Event field is required"
        event = envelope["event"]
        if event is None or event == {} or (isinstance(event, str) and not event.strip()):
            return 13, "Event field cannot be blank"
        moment = envelope.get("time")
        if moment is not None and not isinstance(moment, int | float):
            try:
                float(moment)
            except (TypeError, ValueError):
                return invalid
        metadata = ("host", "source", "sourcetype", "index")
        if any(k in envelope and not isinstance(envelope[k], str) for k in metadata):
            return invalid
        fields = envelope.get("fields")
        if fields is not None and not (isinstance(fields, dict) and all(_flat(v) for v in fields.values())):
            return invalid
        if self.indexes is not None and envelope.get("index", "main") not in self.indexes:
            return 7, "Incorrect index"
        if self.reject_when is not None and self.reject_when(envelope):
            return invalid
        return None

    def _first_invalid(self, envelopes: list[Any], bad: int | None) -> tuple[int, int, str] | None:
        """(event number, code, text) of the first invalid event, as Splunk reads them."""
        for number, envelope in enumerate(envelopes):
            if (problem := self._check(envelope)) is not None:
                return number, *problem
        if bad is not None:
            return bad, 6, "Invalid data format"
        return None

    async def _event(self, request: web.Request) -> web.Response:
        self.attempts += 1
        await self.slow_down()
        if (error := self._auth_error(request)) is not None:
            return error
        if (status := self.faults.next_failure()) is not None:
            code = 9 if status == 503 else 8
            text = "Server is busy" if code == 9 else "Internal server error"
            return self._error(request, status, code, text, self.failure_headers())
        if self.busy:
            return self._error(request, 503, 9, "Server is busy", self.failure_headers())
        channel, error = self._channel(request)
        if error is not None:
            return error
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzip_requests += 1
        body = (await request.read()).decode("utf-8")  # aiohttp has already inflated gzip
        if not body.strip():
            return self._error(request, 400, 5, "No data")
        envelopes, bad = parse_concatenated(body)
        if (invalid := self._first_invalid(envelopes, bad)) is not None:
            number, code, text = invalid
            if number > 0 and not self.all_or_nothing:
                await self.accept(envelopes[:number])  # Splunk indexed those before the bad one
            if code in (6, 12, 13):
                self.refused += 1
            extra = {"invalid-event-number": number} if self.names_invalid_event else {}
            return self._error(request, 400, code, text, **extra)
        extra: dict[str, Any] = {}
        if self.ack_enabled and channel is not None:
            self.channels.add(channel)
            ack_id = self._next_ack.get(channel, 0)
            self._next_ack[channel] = ack_id + 1
            extra["ackId"] = ack_id
            if self.drop_next > 0:
                self.drop_next -= 1
                self._acks[(channel, ack_id)] = False
                return _answer(200, 0, "Success", **extra)
            self._acks[(channel, ack_id)] = True
        await self.accept(envelopes)
        return _answer(200, 0, "Success", **extra)

    async def _ack(self, request: web.Request) -> web.Response:
        if (error := self._auth_error(request)) is not None:
            return error
        if not self.ack_enabled:
            return self._error(request, 400, 14, "ACK is disabled")
        channel = request.query.get("channel") or request.headers.get("X-Splunk-Request-Channel")
        if not channel:
            return self._error(request, 400, 10, "Data channel is missing")
        try:
            ids = (await request.json())["acks"]
        except (ValueError, KeyError, TypeError):
            return _answer(400, 6, "Invalid data format")
        return web.json_response({"acks": {str(i): self._acks.get((channel, i), False) for i in ids}})

    async def _health(self, request: web.Request) -> web.Response:
        if self.busy:
            return self._error(request, 503, 9, "Server is busy")
        header = request.headers.get("Authorization")
        if header is not None and header != f"Splunk {self.token}":
            return self._error(request, 400, 4, "Invalid token")
        return _answer(200, 17, "HEC is healthy")
