"""Write events to standard output, one per line: for demos and containers that ship stdout."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

from auditstream.formats import make_encoder
from auditstream.formats.cef import CefSettings
from auditstream.sinks.base import Envelope, ProbeResult, SinkHealth, SinkSettingsBase


class StdoutSinkSettings(SinkSettingsBase):
    type: Literal["stdout"] = "stdout"
    name: str = "stdout"


class StdoutSink:
    def __init__(self, settings: StdoutSinkSettings, cef: CefSettings | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self._encode = make_encoder(settings.format, cef)
        self._health = SinkHealth()

    def routes(self, stream: str) -> bool:
        return self.settings.routes(stream)

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Envelope]) -> None:
        out = sys.stdout.buffer
        out.write(b"".join(self._encode(envelope.event) + b"\n" for envelope in batch))
        out.flush()

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "standard output")

    def health(self) -> SinkHealth:
        return self._health

    async def close(self) -> None:
        sys.stdout.flush()
