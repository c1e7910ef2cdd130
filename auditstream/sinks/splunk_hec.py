"""Splunk HTTP Event Collector: ``POST /services/collector/event``.

Each request is a run of concatenated HEC envelopes (``time`` from the event, ``host``,
``source``, ``sourcetype``, ``index``, ``event``), gzip-compressed by default, with a channel
header. The response is handled row by row from the HEC code table:

* code 0: acknowledged (with ``ack = true``: once ``/services/collector/ack`` says so;
  an ackId not confirmed within ``ack_timeout`` makes the request be sent again);
* codes 1-4 / HTTP 401, 403 (token): fatal, the sink stops loudly and keeps the data;
* codes 7, 10, 11, 14 (index, channel, ack configuration), 5 (empty body, a bug) and the
  HTTP statuses that are about the URL (404, 405, 410...): fatal;
* codes 6, 12, 13 (a bad event) with ``invalid-event-number`` N: Splunk reads a request's
  events in order and stops at the first invalid one, having indexed those before it (Vector's
  HEC source does the same). So event N is dead-lettered, events N+1... are sent again, and
  events 0..N-1 count as delivered: each good event arrives once. With ``ack = true`` the
  events before N are sent again in a request of their own, because a 400 carries no ackId
  to confirm them: each arrives at most twice;
* the same codes without a usable ``invalid-event-number`` (the OpenTelemetry Collector's
  HEC receiver leaves it out), and any other 4xx: nobody says what was indexed, so every
  event of the request is sent again alone (one request per event) and those refused alone
  are dead-lettered. Bisection would be cheaper, but against a receiver that indexes the
  events before a bad one it sends an event again at every level where its half is refused
  (up to log2 n copies); alone, each good event arrives at most twice;
* 413 (the body was refused before any event was read): the request is bisected;
* codes 8, 9 / HTTP 408, 429, 5xx: retried with backoff, ``Retry-After`` honoured.

The receiver's ``text`` is quoted in errors and dead-letter reasons only scrubbed of secrets
and truncated (see :mod:`auditstream.sinks.http_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import orjson
import structlog
from pydantic import Field, SecretStr, field_validator

from auditstream.formats import Encoding, make_encoder
from auditstream.settings_base import Duration
from auditstream.sinks.base import Envelope, ProbeResult, SinkFatalError
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
from auditstream.sinks.retry import TransientError

log = structlog.get_logger("auditstream.sinks.splunk_hec")

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"

TOKEN_CODES = {1, 2, 3, 4}
CONFIG_CODES = {5, 7, 10, 11, 14}
BAD_EVENT_CODES = {6, 12, 13}
RETRY_CODES = {8, 9}


class SplunkHecSinkSettings(ProxiedSinkSettings):
    type: Literal["splunk_hec"] = "splunk_hec"
    url: str
    token: SecretStr
    index: str | None = None
    source: str | None = "auditstream:{stream}"
    sourcetype: str | None = None
    host: str | None = None
    gzip: bool = True
    timeout: Duration = 30.0
    channel: str | None = None
    ack: bool = False
    ack_timeout: Duration = 120.0
    ack_poll_interval: Duration = 2.0
    max_in_flight: int = Field(default=4, ge=1, le=64)

    def credential_urls(self) -> list[str]:
        return [self.url]  # the token goes with every request

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        check_url(value)
        base = value.rstrip("/")
        for suffix in (EVENT_PATH, "/services/collector"):
            base = base.removesuffix(suffix)
        return base

    @field_validator("channel")
    @classmethod
    def _guid(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                uuid.UUID(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a GUID (HEC channels are GUIDs)") from None
        return value


def _epoch(time_ns: int) -> bytes:
    """Seconds with microseconds, from integers (a float would round differently)."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return f"{seconds}.{rest // 1000:06d}".encode()


def _response_info(response: HttpResponse) -> dict[str, Any]:
    try:
        info = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def _text(response: HttpResponse, info: dict[str, Any]) -> str:
    """HEC's ``text`` (else the body, else the status), scrubbed and truncated for quoting."""
    text = info.get("text")
    return (response.quote(text) if text else response.excerpt()) or f"HTTP {response.status}"


class AckTracker:
    """Waits for indexer acknowledgements, polling for every outstanding ackId at once."""

    def __init__(self, client: HttpClient, url: str, headers: dict[str, str], poll_interval: float) -> None:
        self._client = client
        self._url = url
        self._headers = headers
        self._interval = poll_interval
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def wait(self, ack_id: int, within: float) -> bool:
        """True once acknowledged; False if not ``within`` seconds."""
        future = asyncio.get_running_loop().create_future()
        self._waiters[ack_id] = future
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(future)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(ack_id, None)

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._interval)
            ids = list(self._waiters)
            if not ids:
                return
            try:
                response = await self._client.request(
                    "POST", self._url, body=orjson.dumps({"acks": ids}), headers=self._headers
                )
            except TransientError as exc:
                log.debug("ack poll failed", error=str(exc))
                continue
            info = _response_info(response)
            if response.status in (401, 403) or info.get("code") in TOKEN_CODES | {14}:
                error = SinkFatalError(f"HEC refused the ack poll: {_text(response, info)}")
                for future in self._waiters.values():
                    if not future.done():
                        future.set_exception(error)
                return
            acks = info.get("acks") if response.status == 200 else None
            if not isinstance(acks, dict):
                continue
            for key, done in acks.items():
                waiter = self._waiters.get(int(key))
                if done is True and waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


class SplunkHecTransport:
    def __init__(self, settings: SplunkHecSinkSettings, encoding: Encoding) -> None:
        self.settings = settings
        self.max_in_flight = settings.max_in_flight
        self.channel = settings.channel or str(uuid.uuid4())
        self._encode_event = make_encoder(settings.format, encoding)
        self._client = HttpClient.for_sink(settings, settings.timeout, settings.max_in_flight)
        self._auth = {"Authorization": f"Splunk {settings.token.get_secret_value()}"}
        self._headers = {
            **self._auth,
            "X-Splunk-Request-Channel": self.channel,
            "Content-Type": "application/json",
        }
        self._acks = AckTracker(
            self._client,
            f"{settings.url}{ACK_PATH}?channel={self.channel}",
            self._headers,
            settings.ack_poll_interval,
        )
        self._meta: dict[str, bytes] = {}

    def _metadata(self, stream: str) -> bytes:
        """``,"host":…,"source":…`` for a stream, built once (``{stream}`` is substituted)."""
        cached = self._meta.get(stream)
        if cached is None:
            s = self.settings
            fields = {"host": s.host, "source": s.source, "sourcetype": s.sourcetype, "index": s.index}
            cached = b"".join(
                b',"' + key.encode() + b'":' + orjson.dumps(value.replace("{stream}", stream))
                for key, value in fields.items()
                if value
            )
            self._meta[stream] = cached
        return cached

    def encode(self, envelope: Envelope) -> bytes:
        event = self._encode_event(envelope.event)
        if self.settings.format != "json":
            event = orjson.dumps(event.decode("utf-8"))
        return (
            b'{"time":'
            + _epoch(envelope.time_ns)
            + self._metadata(envelope.stream)
            + b',"event":'
            + event
            + b"}"
        )

    async def open(self) -> None:
        warn_if_cleartext(self.settings)
        await self._client.open()

    async def close(self) -> None:
        await self._acks.close()
        await self._client.close()

    async def write(self, records: Sequence[Record]) -> WriteResult:
        body = b"\n".join(record.payload for record in records)
        response = await self._client.request(
            "POST",
            self.settings.url + EVENT_PATH,
            body=body,
            headers=self._headers,
            compress=self.settings.gzip,
        )
        result = self._classify(response, len(records))
        if result is None:  # accepted
            if self.settings.ack:
                await self._await_ack(_response_info(response))
            return WriteResult()
        return result

    def _classify(self, response: HttpResponse, count: int) -> WriteResult | None:
        """None for success; a WriteResult for bad events; raises for the rest."""
        info = _response_info(response)
        status = response.status
        code = info.get("code")
        if 200 <= status < 300 and code in (None, 0):
            return None
        detail = f"{_text(response, info)} (code {code}, HTTP {status})"
        if code in TOKEN_CODES or status in (401, 403):
            raise SinkFatalError(f"HEC rejected the token: {detail}; fix token / token_file")
        if code in CONFIG_CODES:
            raise SinkFatalError(f"HEC configuration error: {detail}; check index, channel and ack settings")
        if status in FATAL_STATUSES:
            raise SinkFatalError(f"HEC at {self.settings.url}: {detail}: {FATAL_STATUSES[status]}")
        if code in BAD_EVENT_CODES:
            return self._after_invalid_event(info.get("invalid-event-number"), count, f"HEC: {detail}")
        if code in RETRY_CODES or is_transient_status(status):
            raise response.transient_error(f"POST {self.settings.url}{EVENT_PATH}")
        if status == 413:
            return WriteResult.bisect(count, f"HEC: {detail}")
        if 400 <= status < 500:
            return WriteResult.one_by_one(count, f"HEC: {detail}")
        raise TransientError(f"HEC answered unexpectedly: {detail}")

    def _after_invalid_event(self, number: object, count: int, reason: str) -> WriteResult:
        """Event ``number`` refused; those before it indexed, those after it not read (see
        the module docstring). Without a usable number, every event is sent again alone."""
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < count:
            return WriteResult.one_by_one(count, reason)
        before = list(range(number)) if self.settings.ack else []
        after = list(range(number + 1, count))
        return WriteResult(rejected={number: reason}, resend=[g for g in (before, after) if g])

    async def _await_ack(self, info: dict[str, Any]) -> None:
        ack_id = info.get("ackId")
        if not isinstance(ack_id, int):
            raise SinkFatalError(
                "HEC returned no ackId: indexer acknowledgement is off for this token; "
                "enable it or set ack = false"
            )
        if not await self._acks.wait(ack_id, self.settings.ack_timeout):
            raise TransientError(
                f"no indexer acknowledgement for ackId {ack_id} within {self.settings.ack_timeout:g}s"
            )

    async def probe(self) -> ProbeResult:
        base = self.settings.url
        health = await self._client.request("GET", base + HEALTH_PATH, headers=self._auth)
        health_text = _text(health, _response_info(health))
        if health.status != 200:
            return ProbeResult(False, f"{base}{HEALTH_PATH}: HTTP {health.status} {health_text}")
        # An empty POST carries no event: a valid token gets "No data" (code 5), a bad one 401/403.
        check = await self._client.request("POST", base + EVENT_PATH, body=b"", headers=self._headers)
        info = _response_info(check)
        if check.status in (401, 403) or info.get("code") in TOKEN_CODES:
            return ProbeResult(False, f"HEC is up but rejected the token: {_text(check, info)}")
        return ProbeResult(True, f"HEC at {base} is healthy ({health_text}); token accepted")


class SplunkHecSink(TransportSink):
    transport_class = SplunkHecTransport

    @property
    def channel(self) -> str:
        """The X-Splunk-Request-Channel GUID this sink sends (indexer acknowledgement uses it)."""
        transport = self.transport
        assert isinstance(transport, SplunkHecTransport)
        return transport.channel
