"""Hand one batch to every sink routed for its stream; acknowledged only when all have it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog

from auditstream.engine.observer import EngineObserver, NullEngineObserver
from auditstream.sinks.base import Envelope, Sink, SinkFatalError

log = structlog.get_logger("auditstream.fanout")


class FanOut:
    def __init__(
        self, sinks: Sequence[Sink], failure_pause: float = 30.0, observer: EngineObserver | None = None
    ) -> None:
        self.sinks = list(sinks)
        self._failure_pause = failure_pause
        self._observer: EngineObserver = observer or NullEngineObserver()

    def routes_for(self, stream: str) -> list[Sink]:
        return [sink for sink in self.sinks if sink.routes(stream)]

    async def _send(self, sink: Sink, stream: str, batch: Sequence[Envelope]) -> None:
        started = time.monotonic()
        await sink.send(batch)
        self._observer.sink_acknowledged(stream, sink.name, len(batch), time.monotonic() - started)

    async def deliver(self, stream: str, batch: Sequence[Envelope]) -> None:
        """Return once every routed sink has acknowledged the batch.

        Sinks retry transient failures themselves. A sink that fails fatally (bad token,
        full disk) keeps the batch unacknowledged: we pause and try again, never drop, and a
        sink that already has the batch is not sent it twice.
        """
        pending = self.routes_for(stream)
        while pending:
            results = await asyncio.gather(
                *(self._send(sink, stream, batch) for sink in pending), return_exceptions=True
            )
            failed: list[Sink] = []
            for sink, result in zip(pending, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    failed.append(sink)
                    self._observer.sink_failed(stream, sink.name, len(batch))
                    log.error(
                        "sink failed; batch kept and retried",
                        sink=sink.name,
                        stream=stream,
                        records=len(batch),
                        error=str(result),
                        fatal=isinstance(result, SinkFatalError),
                        retry_in_seconds=self._failure_pause,
                    )
            pending = failed
            if pending:
                await asyncio.sleep(self._failure_pause)
        self._observer.stream_delivered(stream)
