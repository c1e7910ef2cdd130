"""Durable per-stream progress: watermark, keys delivered inside the overlap, open queries.

The file is replaced atomically (temp file, fsync, rename, fsync of the directory), mode
0600, and the previous version is kept as ``<file>.bak`` through a hard link so that a
readable checkpoint exists at every instant. A corrupt or unreadable file stops the daemon:
restarting from scratch would silently skip or replay days of audit data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.fsutil import NotWritable, check_directory_writable, ensure_directory, fsync_directory

SCHEMA_VERSION = 1
FILE_MODE = 0o600


class CheckpointError(Exception):
    """The checkpoint cannot be read or written; the message names the file and the way out."""


@dataclass
class OpenQuery:
    """A long-running query whose completion record has not been delivered yet."""

    start_ns: int
    first_seen_ns: int


@dataclass
class StreamState:
    watermark_ns: int
    delivered: dict[str, int] = field(default_factory=dict)  # key -> may be relisted until (ns)
    open_queries: dict[str, OpenQuery] = field(default_factory=dict)
    end_ns: int | None = None  # backfills remember where they stop, so a resume keeps it

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"watermark_ns": self.watermark_ns, "delivered": self.delivered}
        if self.open_queries:
            data["open_queries"] = {
                qid: {"start_ns": q.start_ns, "first_seen_ns": q.first_seen_ns}
                for qid, q in self.open_queries.items()
            }
        if self.end_ns is not None:
            data["end_ns"] = self.end_ns
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamState:
        return cls(
            watermark_ns=int(data["watermark_ns"]),
            delivered={str(k): int(v) for k, v in dict(data.get("delivered", {})).items()},
            open_queries={
                str(qid): OpenQuery(int(q["start_ns"]), int(q["first_seen_ns"]))
                for qid, q in dict(data.get("open_queries", {})).items()
            },
            end_ns=int(data["end_ns"]) if data.get("end_ns") is not None else None,
        )


def _recovery_hint(path: Path) -> str:
    return (
        f"restore the previous version with `cp {path}.bak {path}`, or move {path} away to start every "
        "stream over at [streams] start_at (records may be sent again or skipped)"
    )


def _stream_hint(path: Path, stream: str) -> str:
    return (
        f"restore `cp {path}.bak {path}`, or start just this stream over with "
        f"`auditstream run --config FILE --reset-checkpoint {stream}`"
    )


class CheckpointStore:
    """All streams' states in one file, written atomically as a whole.

    Beside them it keeps the newest record time any listing returned: a time the API's clock
    had certainly reached when the file was written, which is where a watermark found in the
    future (written while the host clock ran ahead) can safely be pulled back to.
    """

    def __init__(
        self,
        path: Path,
        newest_record_ns: Callable[[], int | None] = lambda: None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.path = path
        self._observer: EngineObserver = observer or NullEngineObserver()
        self.backup = path.with_name(path.name + ".bak")
        self._newest_record_ns = newest_record_ns
        self.loaded_newest_record_ns: int | None = None
        self._lock = asyncio.Lock()
        self._generation = 0
        self._saved_generation = 0

    def load(self, reset: frozenset[str] = frozenset()) -> dict[str, StreamState]:
        """Read the file; an absent file (and no backup) means a first start.

        Streams named in ``reset`` are dropped, even when their saved state is unreadable.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if self.backup.exists():
                raise CheckpointError(
                    f"checkpoint {self.path} is missing but {self.backup} exists; {_recovery_hint(self.path)}"
                ) from None
            return {}
        except OSError as exc:
            raise CheckpointError(
                f"cannot read checkpoint {self.path}: {exc.strerror}; {_recovery_hint(self.path)}"
            ) from None
        try:
            document = orjson.loads(raw)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            version = document.get("schema_version")
            if version != SCHEMA_VERSION:
                raise ValueError(f"schema_version {version!r}, this auditstream reads {SCHEMA_VERSION}")
            streams = document["streams"]
            if not isinstance(streams, dict):
                raise ValueError("'streams' is not an object")
            newest = document.get("newest_record_ns")
            self.loaded_newest_record_ns = int(newest) if newest is not None else None
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {self.path} is corrupt ({exc}); {_recovery_hint(self.path)}"
            ) from None
        states: dict[str, StreamState] = {}
        for name, state in streams.items():
            if name in reset:
                continue
            try:
                states[name] = StreamState.from_json(state)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(
                    f"checkpoint {self.path}: the state of stream {name} is corrupt ({exc!r}); "
                    f"{_stream_hint(self.path, name)}"
                ) from None
        return states

    def check_writable(self) -> None:
        """Fail at start-up, not after the first delivered batch, when state cannot be kept."""
        try:
            check_directory_writable(self.path.parent)
        except NotWritable as exc:
            raise CheckpointError(
                f"{exc}; fix its permissions or set [checkpoint] path to a writable, persistent location"
            ) from None

    def _write_error(self, exc: OSError) -> CheckpointError:
        return CheckpointError(
            f"cannot write checkpoint {self.path}: {exc.strerror or exc}; fix the directory "
            "(space, permissions) and restart: records delivered since the last successful save "
            "will be sent again, none are lost"
        )

    def _write(self, payload: bytes) -> None:
        directory = self.path.parent
        try:
            ensure_directory(directory)
            fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():
                link_name = f"{tmp_name}.bak"
                os.link(self.path, link_name)
                os.replace(link_name, self.backup)
            os.replace(tmp_name, self.path)
            fsync_directory(directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise self._write_error(exc) from None
        self._observer.checkpoint_written()

    def serialize(self, states: dict[str, StreamState]) -> bytes:
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "streams": {name: s.to_json() for name, s in states.items()},
        }
        newest = max(
            (t for t in (self._newest_record_ns(), self.loaded_newest_record_ns) if t is not None),
            default=None,
        )
        if newest is not None:
            document["newest_record_ns"] = newest
        return orjson.dumps(document)

    async def save(self, states: dict[str, StreamState]) -> None:
        """Persist the current states; concurrent callers share one write when they can.

        A caller returns only once a write that began after its call has completed, so
        whatever it changed before calling is on disk.
        """
        self._generation += 1
        wanted = self._generation
        async with self._lock:
            if self._saved_generation >= wanted:
                return
            generation = self._generation
            payload = self.serialize(states)
            await asyncio.to_thread(self._write, payload)
            self._saved_generation = generation
