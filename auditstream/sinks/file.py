"""Append events, one per line, to a local file (fsync before acknowledging)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from auditstream.formats import make_encoder
from auditstream.formats.cef import CefSettings
from auditstream.sinks.base import Envelope, ProbeResult, SinkHealth, SinkSettingsBase, SinkState

FILE_MODE = 0o640


class FileSinkSettings(SinkSettingsBase):
    type: Literal["file"] = "file"
    path: Path
    fsync: bool = True


class FileSink:
    def __init__(self, settings: FileSinkSettings, cef: CefSettings | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self._encode = make_encoder(settings.format, cef)
        self._health = SinkHealth()
        self._fd: int | None = None

    def routes(self, stream: str) -> bool:
        return self.settings.routes(stream)

    async def start(self) -> None:
        self.settings.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None, "start() not called"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.settings.fsync:
            os.fsync(self._fd)

    async def send(self, batch: Sequence[Envelope]) -> None:
        if not batch:
            return
        data = b"".join(self._encode(envelope.event) + b"\n" for envelope in batch)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            self._health.mark(SinkState.FAILED, f"cannot write {self.settings.path}: {exc.strerror}")
            raise
        self._health.mark(SinkState.OK)

    async def probe(self) -> ProbeResult:
        directory = self.settings.path.parent
        if os.access(directory, os.W_OK) or (not directory.exists() and os.access(directory.parent, os.W_OK)):
            return ProbeResult(True, f"{self.settings.path} is writable")
        return ProbeResult(False, f"directory {directory} is not writable")

    def health(self) -> SinkHealth:
        return self._health

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
