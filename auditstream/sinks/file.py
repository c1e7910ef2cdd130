"""Append events, one per line, to a local file, fsynced before acknowledging.

Rotation: before a write that would take the file past ``rotate_bytes``, or once the file has
been written to for ``rotate_age`` (checked at the next write; age counts from when this
process opened or rotated it), the file is renamed to ``<path>.<UTC time>`` and a new one is
started; with ``rotate_gzip`` the rotated file is compressed in the background to
``<path>.<UTC time>.gz`` (crash-safe: written under a temporary name, then renamed; leftovers
are finished at start). ``rotate_keep`` bounds how many rotated files are kept.

A failed write (disk full, I/O error) is cut back to where it started, so a retry does not
leave half a batch behind: a line is either written once or not at all. An unfinished last
line left by a crash is cut off when the file is opened again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import structlog
from pydantic import Field

from auditstream.formats import Encoding, make_line_encoder
from auditstream.fsutil import NotWritable, check_file_appendable, ensure_directory, fsync_directory
from auditstream.settings_base import Duration
from auditstream.sinks.base import Envelope, ProbeResult, SinkSettingsBase
from auditstream.sinks.delivery import Record, TransportSink, WriteResult
from auditstream.sinks.retry import TransientError

log = structlog.get_logger("auditstream.sinks.file")

FILE_MODE = 0o640
DIR_MODE = 0o750
_TMP_SUFFIX = ".gz.tmp"


class FileSinkSettings(SinkSettingsBase):
    type: Literal["file"] = "file"
    path: Path
    fsync: bool = True
    rotate_bytes: int | None = Field(default=None, ge=1024)
    rotate_age: Duration | None = None
    rotate_gzip: bool = False
    rotate_keep: int | None = Field(default=None, ge=1)

    def written_files(self) -> dict[str, tuple[Path, int]]:
        return {"path": (self.path, DIR_MODE)}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def compress(source: Path) -> Path:
    """``source`` -> ``source.gz`` (mode 0640), then remove ``source``; idempotent after a crash."""
    target = source.with_name(source.name + ".gz")
    temporary = source.with_name(source.name + _TMP_SUFFIX)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "wb") as raw:
        with (
            gzip.GzipFile(fileobj=raw, mode="wb", filename=source.name) as packed,
            source.open("rb") as plain,
        ):
            shutil.copyfileobj(plain, packed, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    temporary.rename(target)
    source.unlink()
    fsync_directory(source.parent)
    return target


class RotatingFile:
    """The blocking part, run in a worker thread: open, rotate, append, fsync, compress."""

    def __init__(self, settings: FileSinkSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self._fd: int | None = None
        self._size = 0
        self._opened_at = 0.0

    def open(self) -> None:
        ensure_directory(self.path.parent, DIR_MODE)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        os.fchmod(self._fd, FILE_MODE)
        self._size = self._cut_torn_tail(self._fd, os.fstat(self._fd).st_size)
        self._opened_at = time.time()

    def _cut_torn_tail(self, fd: int, size: int) -> int:
        """Drop a last line without its newline: a write cut short by a crash (SIGKILL can
        stop a large write() part-way). That batch was never acknowledged, so it is sent
        again; appending after the torn half would glue the next event onto it."""
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        os.ftruncate(fd, end)
        log.warning(
            "cut an unfinished last line (from an interrupted write; its events are sent again)",
            path=str(self.path),
            bytes=size - end,
        )
        return end

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def rotated(self) -> list[Path]:
        """Rotated files, oldest first (their names sort by time)."""
        pattern = re.compile(re.escape(self.path.name) + r"\.\d{8}T\d{6}\.\d{6}Z(\.gz)?")
        return sorted(p for p in self.path.parent.iterdir() if pattern.fullmatch(p.name))

    def _due(self, incoming: int) -> bool:
        s = self.settings
        if self._size == 0:
            return False
        too_big = s.rotate_bytes is not None and self._size + incoming > s.rotate_bytes
        too_old = s.rotate_age is not None and time.time() - self._opened_at >= s.rotate_age
        return too_big or too_old

    def _rotate(self) -> Path:
        assert self._fd is not None
        os.fsync(self._fd)
        self.close()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        self.path.rename(target)
        fsync_directory(self.path.parent)
        self.open()
        if self.settings.rotate_keep is not None:
            for old in self.rotated()[: -self.settings.rotate_keep]:
                old.unlink(missing_ok=True)
        return target

    def append(self, data: bytes) -> Path | None:
        """Append ``data`` durably; returns the file rotated away first, if any."""
        if self._fd is None:
            self.open()
        rotated = self._rotate() if self._due(len(data)) else None
        assert self._fd is not None
        start = self._size
        try:
            _write_all(self._fd, data)
            if self.settings.fsync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        self._size = start + len(data)
        return rotated


class FileTransport:
    max_in_flight = 1

    def __init__(self, settings: FileSinkSettings, encoding: Encoding) -> None:
        self.settings = settings
        self._encode_line = make_line_encoder(settings.format, encoding)
        self._file = RotatingFile(settings)
        self._compressing: set[asyncio.Task[None]] = set()
        self._compress_lock = asyncio.Lock()

    def encode(self, envelope: Envelope) -> bytes:
        return self._encode_line(envelope.event)

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._file.open)
        except OSError as exc:
            raise ValueError(f"cannot open {self.settings.path}: {exc.strerror or exc}") from None
        if self.settings.rotate_gzip:
            for leftover in await asyncio.to_thread(self._file.rotated):
                if not leftover.name.endswith(".gz"):
                    self._compress_later(leftover)

    async def write(self, records: Sequence[Record]) -> WriteResult:
        data = b"".join(record.payload for record in records)
        try:
            rotated = await asyncio.to_thread(self._file.append, data)
        except OSError as exc:
            raise TransientError(f"cannot write {self.settings.path}: {exc.strerror or exc}") from None
        if rotated is not None and self.settings.rotate_gzip:
            self._compress_later(rotated)
        return WriteResult()

    def _compress_later(self, path: Path) -> None:
        async def run() -> None:
            async with self._compress_lock:
                try:
                    await asyncio.to_thread(compress, path)
                except OSError as exc:  # the plain rotated file stays; retried at next start
                    log.error("cannot compress rotated file", path=str(path), error=str(exc))

        task = asyncio.create_task(run())
        self._compressing.add(task)
        task.add_done_callback(self._compressing.discard)

    async def close(self) -> None:
        if self._compressing:
            await asyncio.gather(*self._compressing, return_exceptions=True)
        await asyncio.to_thread(self._file.close)

    async def probe(self) -> ProbeResult:
        try:
            await asyncio.to_thread(check_file_appendable, self.settings.path, DIR_MODE)
        except NotWritable as exc:
            return ProbeResult(False, f"{exc}; fix it or change path")
        return ProbeResult(True, f"{self.settings.path} is writable")


class FileSink(TransportSink):
    transport_class = FileTransport
