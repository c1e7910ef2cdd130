"""The one Sink contract: a batch goes in, an acknowledgement comes out.

The engine moves a stream's checkpoint only after every sink routed for that stream has
returned from :meth:`Sink.send` for the batch, so ``send`` must not return before the
receiver has durably accepted the events (or the sink has written the permanently rejected
ones to its dead-letter file, with the reason).
"""

from __future__ import annotations

import enum
import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import Field

from auditstream.settings_base import Duration, StrictModel, TlsSettings

Event = dict[str, Any]


class Envelope(NamedTuple):
    """One normalized record on its way to the sinks.

    A named tuple rather than a frozen dataclass: one is built per record, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) cost three times as much.
    """

    stream: str
    key: str
    time_ns: int
    event: Event


class SinkError(Exception):
    """A failure the sink could not absorb by retrying."""


class SinkFatalError(SinkError):
    """The sink cannot go on until a human acts (invalid token, wrong index, bad config).

    Data is kept: the batch is not acknowledged, so the checkpoint does not move.
    """


class SinkState(enum.Enum):
    OK = "ok"
    RETRYING = "retrying"  # transient failures, still within its limits
    FAILED = "failed"  # fatal, or retrying for longer than its limits


@dataclass
class SinkHealth:
    state: SinkState = SinkState.OK
    last_error: str | None = None
    since: float = field(default_factory=time.time)
    retries: int = 0

    def mark(self, state: SinkState, error: str | None = None) -> None:
        if state is not self.state:
            self.since = time.time()
        self.state = state
        self.last_error = error
        if state is SinkState.OK:
            self.retries = 0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


class BatchSettings(StrictModel):
    """How a sink cuts what it is given into requests.

    ``max_age`` defaults to 0: a request goes out as soon as the sink can send one, and
    whatever arrives while requests are in flight is coalesced into the next. Waiting longer
    buys fuller requests at the price of latency, and since the engine waits for ``send()``
    before a stream's next batch, a stream with small batches then moves at most one batch
    per ``max_age``."""

    max_events: int = Field(default=500, ge=1)
    max_bytes: int = Field(default=1_000_000, ge=1024)
    max_age: Duration = 0.0


class RetrySettings(StrictModel):
    """Exponential backoff with jitter; ``max_elapsed`` 0 means retry forever (nothing lost)."""

    initial: Duration = 0.5
    maximum: Duration = 30.0
    max_elapsed: Duration = 0.0
    unhealthy_after: Duration = 120.0


class SinkSettingsBase(StrictModel):
    type: str
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    format: Literal["json", "cef", "ocsf", "ecs"] = "json"
    streams: list[str] = Field(default_factory=lambda: ["*"])
    tls: TlsSettings = Field(default_factory=TlsSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    dead_letter_path: Path | None = None

    def routes(self, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, pattern) for pattern in self.streams)

    def written_files(self) -> dict[str, tuple[Path, int]]:
        """Local files the sink appends to besides its dead-letter file, by config key, each
        with the mode its directory gets when the sink creates it.

        Checked (by trying) before anything is listed, so a path that cannot be written is a
        one-line configuration error at start-up rather than a failure mid-delivery.
        """
        return {}


@runtime_checkable
class Sink(Protocol):
    """What the engine needs from any destination."""

    name: str

    def routes(self, stream: str) -> bool:
        """Whether this sink takes records of ``stream``."""
        ...

    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Envelope]) -> None:
        """Return once every envelope is acknowledged or dead-lettered.

        Retries transient failures internally; raises :class:`SinkFatalError` when it
        cannot continue. Batches of one stream are sent in order, one at a time.
        """
        ...

    async def probe(self) -> ProbeResult:
        """Check the destination is reachable and accepts our credentials, sending no event."""
        ...

    def health(self) -> SinkHealth: ...

    async def close(self) -> None:
        """Flush what is buffered and release connections."""
        ...
