"""POST batches of events to any HTTP endpoint (a log pipeline, a webhook, a cloud SIEM).

Body: NDJSON (one encoded event per line, the default) or a JSON array. Statuses:

* 2xx acknowledges the request;
* connection errors, timeouts, 408, 429 and 5xx are retried (honouring ``Retry-After``);
* 401, 403, 407 (credentials), 404, 405, 410 (wrong URL), 415, 426 (body or protocol the
  receiver does not take) and 3xx (redirects are not followed) are about the request, not
  its events: the sink stops with the data kept until the setting is fixed;
* 413 and every other 4xx (400, 409, 422...) are about some of the request's events, so the
  request is bisected: sent again as two halves, and so on, until the events still refused
  on their own are known. Only those are dead-lettered, each with the status and the
  receiver's scrubbed, truncated explanation of *its* refusal; the rest is delivered. When
  every event is refused alone with the same answer, it is the receiver that refuses: the
  delivery machinery fails the sink instead of dead-lettering the stream.

Cost of the bisection: a request of n events holding k refused ones takes at most
``1 + 2·k·ceil(log2 n)`` requests (19 for one bad event among 500, about 2n if every event
is refused), and sends no event twice, since an HTTP receiver that answers 4xx took none of
the request. Statuses that cannot be about an event are fatal above precisely so that a
wrong URL does not cost 2n requests and dead-letter everything.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Literal

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from auditstream.formats import Encoding, make_encoder
from auditstream.settings_base import Duration
from auditstream.sinks.base import Envelope, ProbeResult, SinkFatalError
from auditstream.sinks.delivery import Record, TransportSink, WriteResult
from auditstream.sinks.http_client import (
    FATAL_STATUSES,
    HttpClient,
    check_url,
    is_transient_status,
    warn_if_cleartext,
)
from auditstream.sinks.proxy import ProxiedSinkSettings

# Header names whose value is a credential, when given under ``headers`` instead of ``auth``.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-auth-token"})


class HttpSinkSettings(ProxiedSinkSettings):
    type: Literal["http"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Literal["none", "bearer", "basic"] = "none"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    body: Literal["ndjson", "json_array"] = "ndjson"
    gzip: bool = False
    timeout: Duration = 30.0
    max_in_flight: int = Field(default=2, ge=1, le=64)
    probe_method: Literal["HEAD", "OPTIONS", "GET"] = "HEAD"
    probe_url: str | None = None

    def credential_urls(self) -> list[str]:
        carries = self.auth != "none" or any(name.lower() in CREDENTIAL_HEADERS for name in self.headers)
        return [self.url] if carries else []

    @field_validator("url", "probe_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value)

    @model_validator(mode="after")
    def _auth_complete(self) -> HttpSinkSettings:
        if self.auth == "bearer" and self.token is None:
            raise ValueError('auth = "bearer" needs token (or token_file)')
        if self.auth == "basic" and (self.username is None or self.password is None):
            raise ValueError('auth = "basic" needs username and password (or password_file)')
        if self.auth != "none" and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("give either auth or an Authorization header, not both")
        return self


class HttpTransport:
    def __init__(self, settings: HttpSinkSettings, encoding: Encoding) -> None:
        self.settings = settings
        self.max_in_flight = settings.max_in_flight
        self._encode_event = make_encoder(settings.format, encoding)
        self._client = HttpClient.for_sink(settings, settings.timeout, settings.max_in_flight)
        self._quote = settings.body == "json_array" and settings.format != "json"
        self._headers = {**self._content_headers(), **settings.headers, **self._auth_headers()}

    def _content_headers(self) -> dict[str, str]:
        if self.settings.body == "json_array":
            return {"Content-Type": "application/json"}
        if self.settings.format == "json":
            return {"Content-Type": "application/x-ndjson"}
        return {"Content-Type": "text/plain; charset=utf-8"}

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        if s.auth == "bearer" and s.token is not None:
            return {"Authorization": f"Bearer {s.token.get_secret_value()}"}
        if s.auth == "basic" and s.password is not None:
            pair = f"{s.username}:{s.password.get_secret_value()}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}

    def encode(self, envelope: Envelope) -> bytes:
        payload = self._encode_event(envelope.event)
        return orjson.dumps(payload.decode("utf-8")) if self._quote else payload

    def _body(self, records: Sequence[Record]) -> bytes:
        if self.settings.body == "json_array":
            return b"[" + b",".join(r.payload for r in records) + b"]"
        return b"".join(r.payload + b"\n" for r in records)

    async def open(self) -> None:
        warn_if_cleartext(self.settings)
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def write(self, records: Sequence[Record]) -> WriteResult:
        response = await self._client.request(
            "POST",
            self.settings.url,
            body=self._body(records),
            headers=self._headers,
            compress=self.settings.gzip,
        )
        status = response.status
        if 200 <= status < 300:
            return WriteResult()
        what = f"POST {self.settings.url}"
        if is_transient_status(status):
            raise response.transient_error(what)
        if status in FATAL_STATUSES:
            raise SinkFatalError(f"{what}: HTTP {status} {FATAL_STATUSES[status]}")
        if 300 <= status < 400:
            location = response.quote(response.headers.get("Location", "?"))
            raise SinkFatalError(
                f"{what}: HTTP {status} redirect to {location}: set url to the final address"
            )
        if 400 <= status < 500:
            return WriteResult.bisect(len(records), f"HTTP {status}: {response.excerpt()}".rstrip())
        raise SinkFatalError(f"{what}: HTTP {status} is not an answer this sink understands")

    async def probe(self) -> ProbeResult:
        url = self.settings.probe_url or self.settings.url
        response = await self._client.request(self.settings.probe_method, url, headers=self._auth_headers())
        status = response.status
        detail = f"{self.settings.probe_method} {url}: HTTP {status}"
        if status in FATAL_STATUSES or is_transient_status(status):
            return ProbeResult(False, f"{detail} {response.excerpt()}".rstrip())
        return ProbeResult(True, detail)


class HttpSink(TransportSink):
    transport_class = HttpTransport
