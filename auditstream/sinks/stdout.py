"""Write events to standard output, one per line: for demos and containers that ship stdout.

Acknowledged once the line is flushed to the stdout pipe; what the container runtime does
with it afterwards is outside our sight.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Literal

from auditstream.formats import Encoding, make_line_encoder
from auditstream.sinks.base import Envelope, ProbeResult, SinkSettingsBase
from auditstream.sinks.delivery import Record, TransportSink, WriteResult
from auditstream.sinks.retry import TransientError


class StdoutSinkSettings(SinkSettingsBase):
    type: Literal["stdout"] = "stdout"
    name: str = "stdout"


class StdoutTransport:
    max_in_flight = 1

    def __init__(self, settings: StdoutSinkSettings, encoding: Encoding) -> None:
        self._encode_line = make_line_encoder(settings.format, encoding)

    def encode(self, envelope: Envelope) -> bytes:
        return self._encode_line(envelope.event)

    @staticmethod
    def _emit(data: bytes) -> None:
        out = sys.stdout.buffer  # looked up each time: tests and embedders replace sys.stdout
        out.write(data)
        out.flush()

    async def write(self, records: Sequence[Record]) -> WriteResult:
        try:
            await asyncio.to_thread(self._emit, b"".join(record.payload for record in records))
        except OSError as exc:
            raise TransientError(f"cannot write to standard output: {exc.strerror or exc}") from None
        return WriteResult()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "standard output")


class StdoutSink(TransportSink):
    transport_class = StdoutTransport
