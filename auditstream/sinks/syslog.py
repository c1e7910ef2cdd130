"""Syslog over UDP, TCP or TLS (RFC 5424 or 3164; octet-counting or LF framing).

Delivery semantics:

* TCP/TLS: syslog has no application acknowledgement, so a request counts as delivered
  once the receiver's TCP stack has acknowledged every byte of it: the sink hands the bytes
  to the kernel itself (TLS runs in memory, ``ssl.SSLObject``), so nothing is buffered out of
  sight, and then waits until the kernel's count of unacknowledged bytes (Linux
  ``SIOCOUTQ``) is 0 on a connection that is still open. If the connection drops, is reset,
  or the bytes are not acknowledged within ``ack_timeout``, the connection is re-established
  and the *whole* request is sent again (at-least-once: the receiver may see the part it had
  already read twice). Data the receiver's kernel accepted but its process never processed
  (it crashed) cannot be detected by any syslog client.
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
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from auditstream.formats import Encoding, make_encoder
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

    @field_validator("facility", "severity")
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        names = FACILITIES if info.field_name == "facility" else SEVERITIES
        if value not in names:
            raise ValueError(f"{value!r} is not a {info.field_name}; use one of {', '.join(names)}")
        return value

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.transport]

    @property
    def datagram_limit(self) -> int:
        return min(self.udp_max_bytes, RFC3164_MAX) if self.rfc == 3164 else self.udp_max_bytes


def unacknowledged_bytes(sock: socket.socket) -> int | None:
    """Bytes the peer's TCP has not acknowledged yet; None once the connection is closed.

    After a reset Linux empties the queue, so a closed connection reports None, not 0. Where
    the kernel cannot be asked (not Linux), bytes count as acknowledged once it has them."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        if info[0] == _TCP_CLOSE:
            return None
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except AttributeError:
        return 0
    except OSError:
        return None
    return int(struct.unpack("i", raw)[0])


async def _connected_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket connected to the first of ``host``'s addresses that answers."""
    loop = asyncio.get_running_loop()
    failure: OSError = OSError(f"{host} has no address")
    for family, _, proto, _, address in await loop.getaddrinfo(host, port, type=kind):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure


class _Connection:
    """One TCP connection whose bytes the sink hands to the kernel itself, TLS included.

    asyncio's transports buffer what the kernel has not taken yet, and its TLS transport
    keeps a second buffer beneath the TLS layer that no public call counts: a request could
    look acknowledged while part of it still waited there. Here TLS runs in memory
    (``ssl.SSLObject``) and every byte goes out through ``loop.sock_sendall``: once ``send``
    returns, nothing is left in user space, and the kernel's count of unacknowledged bytes
    says alone whether the receiver has everything.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls: ssl.SSLObject | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = False  # by the receiver, or broken

    @classmethod
    async def open(
        cls, host: str, port: int, context: ssl.SSLContext | None, server_name: str | None
    ) -> _Connection:
        conn = cls(await _connected_socket(host, port, socket.SOCK_STREAM))
        try:
            if context is not None:
                conn._tls = context.wrap_bio(conn._incoming, conn._outgoing, server_hostname=server_name)
                await conn._handshake()
        except BaseException:
            conn.sock.close()
            raise
        conn._reader = asyncio.create_task(conn._read())
        return conn

    async def _handshake(self) -> None:
        assert self._tls is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            await self._flush()
            if done:
                return
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionResetError("the receiver closed the connection during the TLS handshake")
            self._incoming.write(data)

    async def send(self, data: bytes) -> None:
        """Hand ``data`` to the kernel, every byte of it (encrypted first over TLS)."""
        if self._tls is None:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
            return
        self._tls.write(data)
        await self._flush()

    async def _flush(self) -> None:
        """Hand what TLS has written to the kernel."""
        await asyncio.get_running_loop().sock_sendall(self.sock, self._outgoing.read())

    async def _read(self) -> None:
        """A receiver sends nothing but TLS housekeeping and the end of the connection: take it
        as it comes, so that a close is seen at once and unread bytes never turn our own close
        into a reset."""
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self.sock, 65536):
                if self._tls is None:
                    continue
                self._incoming.write(data)
                try:
                    while self._tls.read(65536):
                        pass
                except ssl.SSLWantReadError:
                    continue
                return  # read() gave b"": the receiver's close_notify
        except OSError:  # ssl.SSLError included
            pass
        finally:
            self.closed = True

    async def close(self, *, polite: bool = True) -> None:
        """Close; ``polite``: TLS close_notify, then our FIN, then up to 5 s for the receiver's
        end (rsyslog drops the last messages of a TLS connection closed without a shutdown).
        A connection that failed a request is closed at once: the request is sent again."""
        try:
            if polite and not self.closed:
                async with asyncio.timeout(5):
                    if self._tls is not None:
                        with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: theirs is to come
                            self._tls.unwrap()
                        await self._flush()  # our close_notify
                    self.sock.shutdown(socket.SHUT_WR)
                    if self._reader is not None:
                        await asyncio.shield(self._reader)
        except (OSError, TimeoutError):
            pass
        finally:
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            self.sock.close()


class SyslogTransport:
    max_in_flight = 1  # one connection, one ordered byte stream

    def __init__(self, settings: SyslogSinkSettings, encoding: Encoding) -> None:
        self.settings = settings
        self._encode_event = make_encoder(settings.format, encoding)
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
        await self._drop()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def write(self, records: Sequence[Record]) -> WriteResult:
        if self.settings.transport == "udp":
            return await self._write_udp(records)
        data = b"".join(frame(record.payload, self.settings.framing) for record in records)
        try:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self.settings.ack_timeout):
                    await conn.send(data)
                    await self._until_acknowledged(conn)
            except TimeoutError:
                raise TransientError(
                    f"{self.where}: not acknowledged within {self.settings.ack_timeout:g}s"
                ) from None
        except (OSError, TimeoutError, TransientError) as exc:  # ssl.SSLError is an OSError
            await self._drop(polite=False)
            if isinstance(exc, TransientError):
                raise
            raise TransientError(f"{self.where}: {type(exc).__name__}: {exc}") from None
        return WriteResult()

    async def _connect(self) -> _Connection:
        context = self._tls_context()
        server_name = (self.settings.tls.server_name or self.settings.host) if context else None
        async with asyncio.timeout(self.settings.connect_timeout):
            return await _Connection.open(
                self.settings.host, self.settings.effective_port, context, server_name
            )

    async def _connection(self) -> _Connection:
        if self._conn is not None and self._conn.closed:
            await self._drop()
        if self._conn is None:
            self._conn = await self._connect()
        return self._conn

    async def _drop(self, *, polite: bool = True) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close(polite=polite)

    async def _until_acknowledged(self, conn: _Connection) -> None:
        """Until the receiver's TCP has acknowledged every byte sent (``send`` left none in
        user space); ``write`` bounds the wait by ``ack_timeout``."""
        delay = 0.0002
        while True:
            outq = unacknowledged_bytes(conn.sock)
            if outq == 0:
                return
            if outq is None:
                raise TransientError(f"{self.where}: connection reset before the receiver acknowledged")
            if conn.closed:
                raise TransientError(f"{self.where}: connection closed by the receiver")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _write_udp(self, records: Sequence[Record]) -> WriteResult:
        limit, policy = self.settings.datagram_limit, self.settings.udp_oversize
        invalid: dict[int, str] = {}
        try:
            sock = await self._udp_socket()
            loop = asyncio.get_running_loop()
            for index, record in enumerate(records):
                datagram = fit_datagram(record.payload, limit, policy)
                if datagram is None:
                    invalid[index] = (
                        f"{len(record.payload)} bytes exceed udp_max_bytes {limit} (udp_oversize = refuse)"
                    )
                    continue
                await loop.sock_sendall(sock, datagram)
        except OSError as exc:
            if self._udp is not None:
                self._udp.close()
                self._udp = None
            raise TransientError(f"{self.where}: {type(exc).__name__}: {exc.strerror or exc}") from None
        return WriteResult(invalid=invalid)

    async def _udp_socket(self) -> socket.socket:
        if self._udp is None:
            self._udp = await _connected_socket(
                self.settings.host, self.settings.effective_port, socket.SOCK_DGRAM
            )
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
        except (OSError, TimeoutError) as exc:
            return ProbeResult(False, f"{self.where}: {type(exc).__name__}: {exc}")
        await conn.close()
        return ProbeResult(True, f"{self.where}: connected" + (" (TLS verified)" if self._ssl else ""))


class SyslogSink(TransportSink):
    transport_class = SyslogTransport
