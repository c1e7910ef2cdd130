"""Append events, one per line, to a local file, fsynced before acknowledging.

Rotation: before a write that would take the file past ``rotate_bytes``, or once the file has
been written to for ``rotate_age`` (checked at the next write; age counts from when this
process opened or rotated it), the file is renamed to ``<path>.<UTC time>`` and a new one is
started; with ``rotate_gzip`` the rotated file is compressed in the background to
``<path>.<UTC time>.gz`` (crash-safe: written under a temporary name, then renamed; leftovers
are finished at start). ``rotate_keep`` bounds how many rotated files are kept.

A failed write (disk full, I/O error) is cut back to where it started, so a retry does not
leave half a batch behind: a line is either written once or not at all. An unfinished last
line left by a crash is cut off before the next append.

Processes may share a path: a backfill run beside the daemon with the same configuration
appends to the daemon's file. Appends, rotations and compressions are serialised across
processes with ``flock`` (:class:`RotatingFile`, :func:`compress`), so neither loses, tears
or duplicates the other's lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import gzip
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
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


def compress(source: Path) -> Path | None:
    """``source`` -> ``source.gz`` (mode 0640), then remove ``source``; idempotent after a crash.

    Two processes may share a path (a backfill beside the daemon, with one configuration):
    the temporary file is claimed with ``flock`` first, and whoever does not get it, or finds
    ``source`` already gone, leaves it to the other (None)."""
    target = source.with_name(source.name + ".gz")
    temporary = source.with_name(source.name + _TMP_SUFFIX)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    with os.fdopen(fd, "wb") as raw:
        try:
            plain = source.open("rb")
        except FileNotFoundError:  # compressed by the other process meanwhile
            temporary.unlink(missing_ok=True)
            return None
        os.ftruncate(fd, 0)
        os.fchmod(fd, FILE_MODE)
        with plain, gzip.GzipFile(fileobj=raw, mode="wb", filename=source.name) as packed:
            shutil.copyfileobj(plain, packed, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
        temporary.rename(target)
        # Still under the claim. The other process may open the temporary name anew from now
        # on (a new file) and find source still there: it then writes the same bytes again.
        source.unlink(missing_ok=True)
    fsync_directory(source.parent)
    return target


class RotatingFile:
    """The blocking part, run in a worker thread: open, rotate, append, fsync, compress.

    Every append holds an exclusive ``flock`` on ``.<name>.lock`` beside the file for its few
    system calls: another process may append to the same path (a backfill run beside the
    daemon with one configuration), rotate it away, or die in the middle of a line. Under the
    lock this one follows a rotation by the other (the path names a new file: reopen it),
    takes the size from the file rather than from its own count, cuts a torn last line
    before appending, and cuts back only its own failed write."""

    def __init__(self, settings: FileSinkSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")  # hidden from globs of the path
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self._opened_at = 0.0

    def open(self) -> None:
        ensure_directory(self.path.parent, DIR_MODE)
        if self._lock_fd is None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        with self._locked():
            self._open_file()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        assert self._lock_fd is not None
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open_file(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        os.fchmod(self._fd, FILE_MODE)
        self._size = self._cut_torn_tail(self._fd, os.fstat(self._fd).st_size)
        self._opened_at = time.time()

    def _follow(self) -> None:
        """Under the lock: the file the path names now, whole-lined, and its size."""
        assert self._fd is not None
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            moved = True
        if moved:  # rotated away by another process
            os.close(self._fd)
            self._open_file()
        else:
            self._size = self._cut_torn_tail(self._fd, os.fstat(self._fd).st_size)

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
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

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
        os.close(self._fd)
        self._fd = None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        self.path.rename(target)
        fsync_directory(self.path.parent)
        self._open_file()
        if self.settings.rotate_keep is not None:
            for old in self.rotated()[: -self.settings.rotate_keep]:
                old.unlink(missing_ok=True)
        return target

    def append(self, data: bytes) -> Path | None:
        """Append ``data`` durably; returns the file rotated away first, if any."""
        if self._fd is None:
            self.open()
        with self._locked():
            self._follow()
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
