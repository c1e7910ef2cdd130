"""The dead-letter file: where permanently rejected events go, with the reason.

A rejected event is acknowledged to the engine (its checkpoint moves on) only after its
dead-letter line is on disk, so the file is written with fsync. One JSON object per line:
``time`` (when it was rejected, RFC 3339 UTC), ``sink``, ``stream``, ``key``, ``reason`` and
``event`` (the event exactly as the sink encoded it for the receiver, as text). The file may
hold audit data, so it is created with mode 0600.

A reason often quotes the receiver's answer, and some receivers quote the request's
``Authorization`` header in it: reasons are scrubbed of the sink's credentials and of every
registered secret here, whatever the transport already did. The event itself is audit data
and is written as it was sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from auditstream.fsutil import ensure_directory
from auditstream.ops.secrets import Secrets, redact
from auditstream.sinks.base import Envelope

DEAD_LETTER_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Rejection:
    envelope: Envelope
    payload: bytes
    reason: str


def default_dead_letter_path(state_dir: Path, sink: str) -> Path:
    """``<state_dir>/dead-letter/<sink>.jsonl``: next to the checkpoint file by default."""
    return state_dir / "dead-letter" / f"{sink}.jsonl"


class DeadLetter:
    """Appends rejections to one file; safe to share between concurrent requests of a sink."""

    def __init__(self, path: Path, sink: str, secrets: Secrets | None = None) -> None:
        self.path = path
        self.sink = sink
        self._secrets = secrets
        self._lock = asyncio.Lock()

    def _lines(self, rejections: Sequence[Rejection]) -> bytes:
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        return b"".join(
            orjson.dumps(
                {
                    "time": now,
                    "sink": self.sink,
                    "stream": r.envelope.stream,
                    "key": r.envelope.key,
                    "reason": redact(r.reason, self._secrets),
                    "event": r.payload.decode("utf-8", errors="replace"),
                }
            )
            + b"\n"
            for r in rejections
        )

    def _append(self, data: bytes) -> None:
        ensure_directory(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, DEAD_LETTER_MODE)
        try:
            os.fchmod(fd, DEAD_LETTER_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    async def write(self, rejections: Sequence[Rejection]) -> None:
        """Append and fsync; raises OSError if the file cannot be written (nothing is acked)."""
        if not rejections:
            return
        data = self._lines(rejections)
        async with self._lock:
            await asyncio.to_thread(self._append, data)
