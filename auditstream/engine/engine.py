"""Wire the client, the pollers, the fan-out and the checkpoint together, and shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from auditstream.config import AppConfig
from auditstream.engine.checkpoint import CheckpointStore, StreamState
from auditstream.engine.fanout import FanOut
from auditstream.engine.longqueries import LongQueryTracker
from auditstream.engine.normalize import Normalizer, build_redactor
from auditstream.engine.poller import PollerOptions, StreamPoller
from auditstream.engine.prefetch import AheadBudget
from auditstream.engine.window import WindowPolicy
from auditstream.sdm.client import AuditClient, ClientSettings
from auditstream.sdm.registry import NANOS_PER_SECOND, STREAMS, StreamKind
from auditstream.sinks.base import Sink, SinkHealth
from auditstream.sinks.registry import create_sink

log = structlog.get_logger("auditstream.engine")


@dataclass(frozen=True)
class RunPlan:
    """What one invocation does: the live daemon, or a backfill between two times."""

    streams: list[str]
    checkpoint_path: Path
    backfill_from_ns: int | None = None
    backfill_to_ns: int | None = None
    reset_streams: list[str] = field(default_factory=list)

    @property
    def is_backfill(self) -> bool:
        return self.backfill_from_ns is not None


def client_settings(config: AppConfig) -> ClientSettings:
    source = config.source
    return ClientSettings(
        endpoint=source.endpoint,
        access_key=source.access_key,
        secret_key=source.secret_key.get_secret_value(),
        insecure=source.insecure,
        ca_file=source.ca_file,
        page_size=source.page_size,
        timeout=source.timeout,
        max_transient_retries=source.max_transient_retries,
        max_rate_limit_wait=source.max_rate_limit_wait,
    )


def build_sinks(config: AppConfig) -> list[Sink]:
    """Every configured sink; dead-letter files default to the checkpoint's directory."""
    from auditstream.ops.sink_metrics import PrometheusSinkObserver

    state_dir = config.checkpoint.path.parent
    observer = PrometheusSinkObserver()
    return [create_sink(settings, config.cef, state_dir, observer) for settings in config.sinks]


def _stream_context(stream: str) -> contextvars.Context:
    """A copy of the current context with ``stream`` bound for structlog: every log line of
    a task run in it (and of the tasks it starts) names the stream."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, stream=stream)
    return context


class Engine:
    def __init__(
        self,
        config: AppConfig,
        plan: RunPlan,
        *,
        client: AuditClient | None = None,
        sinks: list[Sink] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.plan = plan
        self.clock = clock
        self.store = CheckpointStore(plan.checkpoint_path)
        self.client = client
        self.sinks = sinks
        self.pollers: list[StreamPoller] = []
        self.stop = asyncio.Event()
        self.first_poll = asyncio.Event()
        self.states: dict[str, StreamState] = {}

    # -- state ---------------------------------------------------------------------------

    def _initial_state(self, stream: str) -> StreamState:
        if self.plan.is_backfill:
            assert self.plan.backfill_from_ns is not None
            return StreamState(watermark_ns=self.plan.backfill_from_ns, end_ns=self._backfill_end())
        start_at = self.config.streams.start_at
        start_ns = int(start_at.timestamp() * NANOS_PER_SECOND) if start_at else self.clock()
        return StreamState(watermark_ns=start_ns)

    def _backfill_end(self) -> int:
        if self.plan.backfill_to_ns is not None:
            return self.plan.backfill_to_ns
        return self.clock() - int(self.config.streams.settle * NANOS_PER_SECOND)

    def load_states(self) -> None:
        """Read the checkpoint (errors stop us) and start new or reset streams fresh."""
        self.store.check_writable()
        self.states = self.store.load(reset=frozenset(self.plan.reset_streams))
        for stream in self.plan.reset_streams:
            log.warning(
                "checkpoint reset on request; the stream starts over at [streams] start_at", stream=stream
            )
        for stream in self.plan.streams:
            if stream not in self.states:
                self.states[stream] = self._initial_state(stream)

    # -- wiring --------------------------------------------------------------------------

    def _policy(self, state: StreamState) -> WindowPolicy:
        streams = self.config.streams
        return WindowPolicy.from_seconds(
            overlap=streams.overlap,
            settle=streams.settle,
            slice_=streams.slice,
            floor_ns=self.plan.backfill_from_ns,
            end_ns=state.end_ns if self.plan.is_backfill else None,
        )

    def _build_pollers(self, client: AuditClient, fanout: FanOut) -> list[StreamPoller]:
        streams = self.config.streams
        options = PollerOptions(
            poll_interval=streams.poll_interval,
            queue_batches=self.config.engine.queue_batches,
            ahead=AheadBudget(self.config.engine.slices_ahead),
        )
        redactor = build_redactor(self.config.normalize)
        pollers = []
        for name in self.plan.streams:
            spec = STREAMS[name]
            state = self.states[name]
            tracker = None
            if spec.kind is StreamKind.QUERY and not self.plan.is_backfill:
                tracker = LongQueryTracker(
                    state,
                    recheck_interval=streams.long_query_recheck,
                    horizon=streams.long_query_horizon,
                    max_open=streams.long_query_max_open,
                    clock=self.clock,
                )
            pollers.append(
                StreamPoller(
                    spec,
                    client,
                    fanout,
                    self.store,
                    self.states,
                    self._policy(state),
                    Normalizer(spec, redactor, keep_credentials=self.config.normalize.keep_credentials),
                    options,
                    self.stop,
                    clock=self.clock,
                    tracker=tracker,
                    on_success=self.first_poll,
                )
            )
        return pollers

    # -- status --------------------------------------------------------------------------

    def sink_health(self) -> dict[str, SinkHealth]:
        return {sink.name: sink.health() for sink in self.sinks or []}

    def lag_seconds(self) -> dict[str, float]:
        """Now minus each stream's watermark; known from the checkpoint on, not only once polling."""
        now = self.clock()
        return {
            name: max(0.0, (now - self.states[name].watermark_ns) / NANOS_PER_SECOND)
            for name in self.plan.streams
            if name in self.states
        }

    @property
    def authenticated(self) -> bool:
        return any(poller.last_success_ns is not None for poller in self.pollers)

    def records_delivered(self) -> int:
        return sum(poller.records_delivered for poller in self.pollers)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped (live) or finished (backfill); re-raises fatal errors."""
        if not self.states:
            self.load_states()
        owns_client = self.client is None
        client = self.client or AuditClient(client_settings(self.config))
        self.client = client
        if self.sinks is None:
            self.sinks = build_sinks(self.config)
        for sink in self.sinks:
            # Tasks a sink starts inherit this context: their log lines name the sink.
            with structlog.contextvars.bound_contextvars(sink=sink.name):
                await sink.start()
        fanout = FanOut(self.sinks, failure_pause=self.config.engine.sink_failure_pause)
        self.pollers = self._build_pollers(client, fanout)
        tasks = [
            asyncio.create_task(p.run(), name=f"poll-{p.spec.name}", context=_stream_context(p.spec.name))
            for p in self.pollers
        ]
        try:
            await self._supervise(tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.store.save(self.states)
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    await sink.close()
            if owns_client:
                await client.close()

    async def _supervise(self, tasks: list[asyncio.Task[None]]) -> None:
        stop_waiter = asyncio.create_task(self.stop.wait())
        pending: set[asyncio.Task[object]] = set(tasks)
        try:
            while pending:
                done, _ = await asyncio.wait(pending | {stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is stop_waiter:
                        continue
                    pending.discard(task)
                    if task.exception() is not None:
                        self.stop.set()
                        raise task.exception()  # type: ignore[misc]
                if self.stop.is_set():
                    await self._drain(tasks)
                    return
        finally:
            stop_waiter.cancel()

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        """Let in-flight batches finish, bounded by [engine] shutdown_timeout."""
        timeout = self.config.engine.shutdown_timeout
        _, still_running = await asyncio.wait(tasks, timeout=timeout)
        if still_running:
            log.warning(
                "shutdown timeout reached; abandoning in-flight batches (they will be re-read on restart)",
                streams=sorted(t.get_name().removeprefix("poll-") for t in still_running),
                timeout_seconds=timeout,
            )
