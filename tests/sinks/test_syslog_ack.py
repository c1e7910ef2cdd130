"""The syslog sink's delivery rule against a receiver that reads nothing: a TCP or TLS request
counts as delivered only once the receiver's TCP has acknowledged every byte of it.

An acknowledgement reported early would move the checkpoint past records the receiver never
got, silently. Two ways to get there are closed here: bytes the kernel holds unacknowledged
(a small receive window that nobody empties can never take a 2 MB request: the write fails
after ``ack_timeout``, and succeeds whole on a new connection once the receiver reads), and
bytes still in the sender's own process, which the kernel's count cannot see: with that count
taken away, a request larger than the kernel can hold must still never be acknowledged. (The
asyncio-stream sink this replaced reported such a TLS request delivered as soon as the private
attribute it read to count the buffer beneath the TLS layer was renamed.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditstream.sinks import syslog
from auditstream.sinks.delivery import Record
from auditstream.sinks.retry import TransientError
from auditstream.sinks.syslog import SyslogSinkSettings, SyslogTransport
from auditstream.sinks.syslog_format import frame
from tests.helpers import wait_until
from tests.peers.tls import make_pki
from tests.sinks.conftest import envelopes


class DeafReceiver:
    """Accepts connections (TLS handshake included) but reads nothing until ``listen()``;
    then reads each connection to its end, keeping what each one carried."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.context = context
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # inherited: a small window
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.reading = threading.Event()
        self.received: list[bytearray] = []
        self.ended = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            data = bytearray()
            self.received.append(data)
            thread = threading.Thread(target=self._serve, args=(conn, data), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, data: bytearray) -> None:
        with contextlib.suppress(OSError):  # ssl.SSLError included: a dropped connection
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            self.reading.wait()
            while chunk := conn.recv(65536):
                data += chunk
        conn.close()
        self.ended += 1

    def listen(self) -> None:
        self.reading.set()

    def close(self) -> None:
        self.reading.set()
        self.listener.close()


@contextlib.contextmanager
def deaf_receiver(context: ssl.SSLContext | None) -> Iterator[DeafReceiver]:
    receiver = DeafReceiver(context)
    try:
        yield receiver
    finally:
        receiver.close()


def _request_size() -> int:
    """More than the kernel can hold of an unread connection: twice the largest send buffer
    (``net.ipv4.tcp_wmem``), so part of the request stays in the sender's process."""
    largest = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return 2 * largest + (1 << 20)


SIZE = _request_size()


def settings(receiver: DeafReceiver, transport: str, pki: Any) -> SyslogSinkSettings:
    config: dict[str, Any] = {"type": "syslog", "name": "deaf", "host": "127.0.0.1", "port": receiver.port}
    config |= {"transport": transport, "ack_timeout": 0.5}
    if transport == "tls":
        config["tls"] = {"ca_file": str(pki.ca_file), "server_name": "localhost"}
    return SyslogSinkSettings.model_validate(config)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_a_request_the_receiver_has_not_acknowledged_is_never_reported_delivered(
    tmp_path: Path, transport: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    context = pki.server_context() if transport == "tls" else None
    with deaf_receiver(context) as receiver:
        sink = SyslogTransport(settings(receiver, transport, pki), None)
        await sink.open()
        batch = envelopes("activities", 2000, pad="x" * 1000)  # about 2 MB
        records = [Record(envelope, sink.encode(envelope)) for envelope in batch]
        try:
            with pytest.raises(TransientError, match=r"not acknowledged within 0\.5s"):
                await sink.write(records)
            receiver.listen()
            await sink.write(records)  # the whole request again, on a new connection
        finally:
            await sink.close()
        expected = b"".join(frame(record.payload, "octet-counting") for record in records)
        wait_until(lambda: receiver.ended == len(receiver.received) == 2, 10, "both connections to end")
        assert bytes(receiver.received[-1]) == expected


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_nothing_is_acknowledged_while_part_of_a_request_is_still_in_our_process(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel cannot say what the receiver acknowledged (not Linux), a request
    counts once the kernel has every byte of it. Bytes still buffered in our process (for TLS,
    beneath the TLS layer too) must hold the acknowledgement back: with the kernel's answer
    taken away, a receiver that reads nothing still gets no request acknowledged."""
    monkeypatch.setattr(syslog, "unacknowledged_bytes", lambda sock: 0)
    pki = make_pki(tmp_path / "pki")
    context = pki.server_context() if transport == "tls" else None
    with deaf_receiver(context) as receiver:
        sink = SyslogTransport(settings(receiver, transport, pki), None)
        await sink.open()
        batch = envelopes("activities", SIZE // 1000, pad="x" * 1000)
        records = [Record(envelope, sink.encode(envelope)) for envelope in batch]
        try:
            async with asyncio.timeout(10):
                with pytest.raises(TransientError, match=r"not acknowledged within 0\.5s"):
                    await sink.write(records)
        finally:
            await sink.close()
