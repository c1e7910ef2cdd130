"""Datadog Logs: ``POST /api/v2/logs`` on the site's intake (``http-intake.logs.<site>``).

Each request is a JSON array of log entries, gzip-compressed, with the API key in the
``DD-API-KEY`` header. An entry carries the event as a JSON string in ``message`` (Datadog
parses a JSON message into attributes, so every event field is searchable) and, beside it,
``ddsource``, ``service``, ``ddtags`` and ``hostname`` (the machine auditstream runs on).

Limits (Datadog's API reference, "Send logs"): at most 1,000 entries and 5 MB uncompressed
per request, 1 MB per log. The batch settings cannot exceed the first two (``max_events``
at most 1,000, ``max_bytes`` at most 4,998,999: 5,000,000 less the array's brackets and
commas, reading "5 MB" the stricter way). Datadog accepts a larger log and *truncates* it;
a truncated JSON document is no longer the audit record, so an entry over 1,000,000 bytes is
dead-lettered whole instead, where it can be replayed from.

Answers, as the reference lists them:

* 202: accepted (any 2xx is);
* 408, 429, 5xx, connection errors, timeouts: retried, ``Retry-After`` honoured;
* 400 (payload formatting) and 413 (too large): about some of the request's entries; the
  intake takes a request whole or not at all, so the request is bisected until the entries
  refused on their own are known, and only those are dead-lettered with the answer (when
  every entry is refused alone with the same answer, the delivery machinery takes it for
  the intake's refusal and fails the sink instead);
* 401 (no key), 403 (invalid key) and the statuses about the URL (404, 405, 3xx...): fatal,
  the sink stops with the data kept until ``api_key`` or ``site`` is fixed.

``probe()`` (``auditstream check``) validates the key with ``GET /api/v1/validate`` on the
site's API host (``api.<site>``), sending no log. Datadog API keys carry no scopes: a key the
site accepts may send logs, so a refusal means a wrong key or a key of another site.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import Literal

import orjson
from pydantic import Field, SecretStr, field_validator

from auditstream.formats import Encoding, make_encoder
from auditstream.sinks.base import BatchSettings, Envelope, ProbeResult, SinkFatalError
from auditstream.sinks.delivery import Record, TransportSink, WriteResult
from auditstream.sinks.http_client import (
    FATAL_STATUSES,
    HttpClient,
    HttpResponse,
    check_url,
    is_transient_status,
    warn_if_cleartext,
)
from auditstream.sinks.proxy import ProxiedSinkSettings
from auditstream.sinks.siem import StreamTemplate

LOGS_PATH = "/api/v2/logs"
VALIDATE_PATH = "/api/v1/validate"
MAX_ENTRIES = 1_000
MAX_PAYLOAD_BYTES = 5_000_000
MAX_LOG_BYTES = 1_000_000
MAX_BATCH_BYTES = MAX_PAYLOAD_BYTES - MAX_ENTRIES - 1  # "[" + "]" + 999 commas
TIMEOUT = 30.0
MAX_IN_FLIGHT = 4
_SITE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


class DatadogBatchSettings(BatchSettings):
    """Requests as large as the intake takes: 1,000 entries, 5 MB uncompressed."""

    max_events: int = Field(default=MAX_ENTRIES, ge=1, le=MAX_ENTRIES)
    max_bytes: int = Field(default=MAX_BATCH_BYTES, ge=1024, le=MAX_BATCH_BYTES)


class DatadogSinkSettings(ProxiedSinkSettings):
    type: Literal["datadog"] = "datadog"
    format: Literal["json", "ocsf", "ecs"] = "json"  # the entry's message
    site: str = "datadoghq.com"
    endpoint_url: str | None = None
    api_key: SecretStr
    service: str = Field(default="strongdm", min_length=1)
    source: str = Field(default="strongdm", min_length=1)
    tags: list[str] = Field(default_factory=lambda: ["stream:{stream}"])
    batch: DatadogBatchSettings = Field(default_factory=DatadogBatchSettings)

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        site = value.strip().lower().removeprefix("app.")
        if not _SITE.fullmatch(site):
            raise ValueError(
                f"{value!r} is not a Datadog site; give the site's domain, e.g. datadoghq.com, "
                "us3.datadoghq.com, datadoghq.eu, ddog-gov.com (endpoint_url takes a full URL)"
            )
        return site

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value).rstrip("/")

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not tag or "," in tag:
                raise ValueError(f"{tag!r} is not a Datadog tag (key:value, no commas)")
        return tags

    def credential_urls(self) -> list[str]:
        return [self.intake_url, self.validate_url]  # DD-API-KEY goes with both

    @property
    def intake_url(self) -> str:
        return (self.endpoint_url or f"https://http-intake.logs.{self.site}") + LOGS_PATH

    @property
    def validate_url(self) -> str:
        return (self.endpoint_url or f"https://api.{self.site}") + VALIDATE_PATH


class DatadogTransport:
    max_in_flight = MAX_IN_FLIGHT

    def __init__(self, settings: DatadogSinkSettings, encoding: Encoding = None) -> None:
        self._encode_event = make_encoder(settings.format, encoding)
        self.settings = settings
        self._client = HttpClient.for_sink(settings, TIMEOUT, MAX_IN_FLIGHT)
        self._key = {"DD-API-KEY": settings.api_key.get_secret_value()}
        self._headers = {**self._key, "Content-Type": "application/json"}
        self._hostname = socket.gethostname()
        self._tags = [StreamTemplate(tag) for tag in settings.tags]
        self._attributes: dict[str, bytes] = {}

    def _beside(self, stream: str) -> bytes:
        """``,"ddsource":…,"service":…,"ddtags":…,"hostname":…}`` for a stream, built once."""
        cached = self._attributes.get(stream)
        if cached is None:
            attributes = {
                "ddsource": self.settings.source,
                "service": self.settings.service,
                "ddtags": ",".join(tag(stream) for tag in self._tags),
                "hostname": self._hostname,
            }
            cached = self._attributes[stream] = b"," + orjson.dumps(attributes)[1:]
        return cached

    def encode(self, envelope: Envelope) -> bytes:
        message = self._encode_event(envelope.event).decode("utf-8")
        return b'{"message":' + orjson.dumps(message) + self._beside(envelope.stream)

    async def open(self) -> None:
        warn_if_cleartext(self.settings)
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def write(self, records: Sequence[Record]) -> WriteResult:
        oversize = {
            index: f"log entry is {len(r.payload):,} bytes; Datadog truncates logs over "
            f"{MAX_LOG_BYTES:,} bytes, so it is kept here whole instead"
            for index, r in enumerate(records)
            if len(r.payload) > MAX_LOG_BYTES
        }
        if not oversize:
            return await self._post(records)
        rest = [index for index in range(len(records)) if index not in oversize]
        return WriteResult(invalid=oversize, resend=[rest] if rest else [])

    async def _post(self, records: Sequence[Record]) -> WriteResult:
        body = b"[" + b",".join(record.payload for record in records) + b"]"
        url = self.settings.intake_url
        response = await self._client.request("POST", url, body=body, headers=self._headers, compress=True)
        return self._classify(response, len(records))

    def _classify(self, response: HttpResponse, count: int) -> WriteResult:
        status = response.status
        what = f"POST {self.settings.intake_url}"
        if 200 <= status < 300:
            return WriteResult()
        if is_transient_status(status):
            raise response.transient_error(what)
        if status in (401, 403):
            detail = f"HTTP {status} {response.excerpt()}".rstrip()
            raise SinkFatalError(
                f"{what}: {detail}: Datadog refused the API key; "
                "fix api_key / api_key_file, or site (a key works only on its own site)"
            )
        if status in FATAL_STATUSES:
            raise SinkFatalError(f"{what}: HTTP {status} {FATAL_STATUSES[status]} / endpoint_url / site")
        if 300 <= status < 400:
            location = response.quote(response.headers.get("Location", "?"))
            raise SinkFatalError(f"{what}: HTTP {status} redirect to {location}: check site / endpoint_url")
        if 400 <= status < 500:
            return WriteResult.bisect(count, f"Datadog: HTTP {status} {response.excerpt()}".rstrip())
        raise SinkFatalError(f"{what}: HTTP {status} is not an answer the Datadog sink understands")

    async def probe(self) -> ProbeResult:
        url = self.settings.validate_url
        response = await self._client.request("GET", url, headers=self._key)
        if response.status == 200:
            return ProbeResult(True, f"{url}: API key valid; logs go to {self.settings.intake_url}")
        if response.status in (401, 403):
            return ProbeResult(
                False,
                f"{url}: HTTP {response.status}: Datadog refused the API key; fix api_key / api_key_file, "
                "or site (a key works only on its own site)",
            )
        return ProbeResult(False, f"{url}: HTTP {response.status} {response.excerpt()}".rstrip())


class DatadogSink(TransportSink):
    transport_class = DatadogTransport
