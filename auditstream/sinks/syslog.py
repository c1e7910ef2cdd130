"""Syslog over UDP, TCP or TLS (RFC 5424 or 3164; octet-counting or LF framing).

Delivery semantics:

* TCP/TLS: syslog has no application acknowledgement, so a request counts as delivered
  once the receiver's TCP stack has acknowledged every byte of it (Linux ``SIOCOUTQ`` reaches
  0 on a connection that is still open; elsewhere: once the write buffer is drained). If the
  connection drops, is reset, or the bytes are not acknowledged within ``ack_timeout``, the
  connection is re-established and the *whole* request is sent again (at-least-once: the
  receiver may see the part it had already read twice). Data the receiver's kernel accepted
  but its process never processed (it crashed) cannot be detected by any syslog client.
* UDP: fire and forget, at most once. A refused port reported by ICMP is retried, but a
  datagram sent while nobody listens is lost. Size policy: see :mod:`syslog_format`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from auditstream.formats import make_encoder
from auditstream.formats.cef import CefSettings
from auditstream.settings_base import Duration
from auditstream.sinks.base import Envelope, ProbeResult, SinkSettingsBase
from auditstream.sinks.delivery import Record, TransportSink, WriteResult
from auditstream.sinks.retry import TransientError
from auditstream.sinks.syslog_format import (
    FACILITIES,
    RFC3164_MAX,
    SEVERITIES,
    SyslogFormatter,
    fit_datagram,
    frame,
)

DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}
_TCP_CLOSE = 7  # tcp_info.tcpi_state after a reset


class SyslogSinkSettings(SinkSettingsBase):
    type: Literal["syslog"] = "syslog"
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "tcp"
    framing: Literal["octet-counting", "lf"] = "octet-counting"
    rfc: Literal[5424, 3164] = 5424
    facility: str = "local0"
    severity: str = "info"
    app_name: str = "auditstream"
    hostname: str = Field(default_factory=socket.gethostname)
    structured_data: bool = True
    sd_id: str = "auditstream@32473"
    udp_max_bytes: int = Field(default=2048, ge=480, le=65000)
    udp_oversize: Literal["truncate", "refuse"] = "truncate"
    connect_timeout: Duration = 10.0
    ack_timeout: Duration = 30.0

    @field_validator("facility")
    @classmethod
    def _facility(cls, value: str) -> str:
        if value not in FACILITIES:
            raise ValueError(f"{value!r} is not a facility; use one of {', '.join(FACILITIES)}")
        return value

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        if value not in SEVERITIES:
            raise ValueError(f"{value!r} is not a severity; use one of {', '.join(SEVERITIES)}")
        return value

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.transport]

    @property
    def datagram_limit(self) -> int:
        return min(self.udp_max_bytes, RFC3164_MAX) if self.rfc == 3164 else self.udp_max_bytes


def unacknowledged_bytes(sock: socket.socket) -> int | None:
    """Bytes the peer's TCP has not acknowledged yet (None where the kernel won't say).

    After a reset Linux empties the queue, so a closed connection reports None, not 0."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        if info[0] == _TCP_CLOSE:
            return None
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError):
        return None
    return int(struct.unpack("i", raw)[0])


def _buffered(writer: asyncio.StreamWriter) -> int:
    """Bytes still in user space. For TLS that includes the raw socket transport under the
    TLS layer, which asyncio does not count in the TLS transport's buffer size."""
    transport = writer.transport
    size = transport.get_write_buffer_size()
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    if isinstance(inner, asyncio.WriteTransport):
        size += inner.get_write_buffer_size()
    return size


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader.exception())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(5):
                await self.writer.wait_closed()


class SyslogTransport:
    max_in_flight = 1  # one connection, one ordered byte stream

    def __init__(self, settings: SyslogSinkSettings, cef: CefSettings | None) -> None:
        self.settings = settings
        self._encode_event = make_encoder(settings.format, cef)
        self._formatter = SyslogFormatter(
            rfc=settings.rfc,
            facility=FACILITIES[settings.facility],
            severity=SEVERITIES[settings.severity],
            hostname=settings.hostname,
            app_name=settings.app_name,
            structured_data=settings.structured_data,
            sd_id=settings.sd_id,
        )
        self._conn: _Connection | None = None
        self._udp: socket.socket | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.transport}://{self.settings.host}:{self.settings.effective_port}"

    def encode(self, envelope: Envelope) -> bytes:
        body = self._encode_event(envelope.event)
        return self._formatter.format(envelope.stream, envelope.key, envelope.time_ns, body)

    async def open(self) -> None:
        self._tls_context()  # a bad CA or key file is a startup error
        # Connections are made on first use: a receiver that is down must not stop startup.

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.transport == "tls" and self._ssl is None:
            self._ssl = self.settings.tls.ssl_context()
        return self._ssl

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def write(self, records: Sequence[Record]) -> WriteResult:
        if self.settings.transport == "udp":
            return await self._write_udp(records)
        data = b"".join(frame(record.payload, self.settings.framing) for record in records)
        try:
            conn = await self._connection()
            conn.writer.write(data)
            await conn.writer.drain()
            await self._until_acknowledged(conn)
        except (OSError, ssl.SSLError, TimeoutError, TransientError) as exc:
            await self._drop()
            if isinstance(exc, TransientError):
                raise
            raise TransientError(f"{self.where}: {type(exc).__name__}: {exc}") from None
        return WriteResult()

    async def _connect(self) -> _Connection:
        context = self._tls_context()
        server_name = (self.settings.tls.server_name or self.settings.host) if context else None
        async with asyncio.timeout(self.settings.connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.settings.host, self.settings.effective_port, ssl=context, server_hostname=server_name
            )
        return _Connection(reader, writer)

    async def _connection(self) -> _Connection:
        if self._conn is not None and not self._conn.usable():
            await self._drop()
        if self._conn is None:
            self._conn = await self._connect()
        return self._conn

    async def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _until_acknowledged(self, conn: _Connection) -> None:
        sock = conn.writer.get_extra_info("socket")
        deadline = time.monotonic() + self.settings.ack_timeout
        delay = 0.0002
        while True:
            if _buffered(conn.writer) == 0:
                outq = unacknowledged_bytes(sock) if sock is not None else 0
                if outq == 0:
                    return
                if outq is None:
                    raise TransientError(f"{self.where}: connection reset before the receiver acknowledged")
            if not conn.usable():
                raise TransientError(f"{self.where}: connection closed by the receiver")
            if time.monotonic() > deadline:
                raise TransientError(f"{self.where}: not acknowledged within {self.settings.ack_timeout:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _write_udp(self, records: Sequence[Record]) -> WriteResult:
        limit, policy = self.settings.datagram_limit, self.settings.udp_oversize
        rejected: dict[int, str] = {}
        try:
            sock = await self._udp_socket()
            loop = asyncio.get_running_loop()
            for index, record in enumerate(records):
                datagram = fit_datagram(record.payload, limit, policy)
                if datagram is None:
                    rejected[index] = (
                        f"{len(record.payload)} bytes exceed udp_max_bytes {limit} (udp_oversize = refuse)"
                    )
                    continue
                await loop.sock_sendall(sock, datagram)
        except OSError as exc:
            if self._udp is not None:
                self._udp.close()
                self._udp = None
            raise TransientError(f"{self.where}: {type(exc).__name__}: {exc.strerror or exc}") from None
        return WriteResult(rejected=rejected)

    async def _udp_socket(self) -> socket.socket:
        if self._udp is None:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(
                self.settings.host, self.settings.effective_port, type=socket.SOCK_DGRAM
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError:
                sock.close()
                raise
            self._udp = sock
        return self._udp

    async def probe(self) -> ProbeResult:
        if self.settings.transport == "udp":
            try:
                await self._udp_socket()
            except OSError as exc:
                return ProbeResult(False, f"{self.where}: {exc.strerror or exc}")
            return ProbeResult(True, f"{self.where}: resolved (UDP has no handshake to check)")
        try:
            conn = await self._connect()
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            return ProbeResult(False, f"{self.where}: {type(exc).__name__}: {exc}")
        await conn.close()
        return ProbeResult(True, f"{self.where}: connected" + (" (TLS verified)" if self._ssl else ""))


class SyslogSink(TransportSink):
    transport_class = SyslogTransport
