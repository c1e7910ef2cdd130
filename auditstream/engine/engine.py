"""Wire the client, the pollers, the fan-out and the checkpoint together, and shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from auditstream.config import AppConfig
from auditstream.engine.checkpoint import BACKUP_EVERY, CheckpointStore, StreamState
from auditstream.engine.fanout import FanOut
from auditstream.engine.longqueries import LongQueryTracker
from auditstream.engine.normalize import Normalizer, build_redactor
from auditstream.engine.observer import NullObserver, Observer
from auditstream.engine.poller import PollerOptions, StreamPoller
from auditstream.engine.prefetch import AheadBudget, BufferBudget
from auditstream.engine.replays import ReplayPoller, chunk_reader, replay_assembler
from auditstream.engine.window import WindowPolicy
from auditstream.retrying import Backoff
from auditstream.sdm.apiclock import ApiClock
from auditstream.sdm.client import AuditClient, ClientSettings
from auditstream.sdm.errors import ApiError
from auditstream.sdm.registry import NANOS_PER_SECOND, STREAMS, StreamKind
from auditstream.sinks.base import Sink, SinkHealth
from auditstream.sinks.observer import SinkObserver
from auditstream.sinks.registry import create_sink

log = structlog.get_logger("auditstream.engine")

FUTURE_TOLERANCE_NS = 120 * NANOS_PER_SECOND
"""A watermark this far past the API's clock was not reached by listing: windows end at the
API's time, which the estimate knows to within a rate-limit window (a minute)."""

CONNECT_NOTICE_SECONDS = 10.0
CONNECT_RETRY_MAX_SECONDS = 30.0
"""Say so when the first call has not been answered by then (a black-holed endpoint makes
each attempt wait for the whole [source] timeout before it fails)."""

CLOSE_MIN_SECONDS = 1.0
"""Sinks always get this long to close cleanly, even when the drain used the whole budget."""

CATCH_UP_LOG_EVERY = 15.0
"""While streams catch up after a start (a checkpoint hours old, a ``start_at`` in the
past), a progress line this often: a catch-up of days takes minutes, and a log that says
nothing between "starting" and "caught up" looks like a hung daemon."""
CATCH_UP_CHECK_EVERY = 1.0
"""How often the catch-up reporter looks whether every stream reached the live edge (cheap:
a lag per stream), so "caught up" is logged within a second of it."""


@dataclass(frozen=True)
class RunPlan:
    """What one invocation does: the live daemon, or a backfill between two times."""

    streams: list[str]
    checkpoint_path: Path
    backfill_from_ns: int | None = None
    backfill_to_ns: int | None = None
    reset_streams: list[str] = field(default_factory=list)
    fresh: bool = False  # ignore whatever the checkpoint holds (the demo: its emulator is new)

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
        calls_per_minute=source.calls_per_minute,
    )


def build_sinks(config: AppConfig, observer: SinkObserver | None = None) -> list[Sink]:
    """Every configured sink; dead-letter files default to the checkpoint's directory."""
    state_dir = config.checkpoint.path.parent
    encoding = config.encoder_settings()
    return [create_sink(settings, encoding, state_dir, observer) for settings in config.sinks]


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
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.plan = plan
        self.observer: Observer = observer or NullObserver()
        self.api_clock = client.clock if client is not None else ApiClock(wall=clock)
        self.store = CheckpointStore(
            plan.checkpoint_path,
            newest_record_ns=self._newest_record_ns,
            observer=self.observer,
            json_overlap_ns=int(config.streams.overlap * NANOS_PER_SECOND),
            commit_interval=config.checkpoint.commit_interval,
        )
        self.client = client
        self.sinks = sinks
        self.pollers: list[StreamPoller] = []
        self.stop = asyncio.Event()
        self.first_poll = asyncio.Event()
        self.states: dict[str, StreamState] = {}
        self._loaded = False
        self._connected = False
        self._started_at_ns: dict[str, int] = {}  # each stream's watermark when streaming began

    @property
    def clock(self) -> Callable[[], int]:
        """What "now" is before any stream is listed: the host clock held to the API's as any
        record shows it (sdm.apiclock)."""
        return self.api_clock.now_ns

    def stream_clock(self, stream: str) -> Callable[[], int]:
        """What "now" is for one stream's windows and lag: raised only by the records of the
        service it lists and by what several services show, so that one source stamping
        records from the future (a gateway's fast clock) moves no other stream."""
        return functools.partial(self.api_clock.now_ns, STREAMS[stream].service)

    def _newest_record_ns(self) -> int | None:
        return self.api_clock.newest_record_ns

    # -- state ---------------------------------------------------------------------------

    def _initial_state(self, stream: str) -> StreamState:
        if self.plan.is_backfill:
            assert self.plan.backfill_from_ns is not None
            return StreamState(watermark_ns=self.plan.backfill_from_ns, end_ns=self._backfill_end())
        start_at = self.config.streams.start_at
        start_ns = int(start_at.timestamp() * NANOS_PER_SECOND) if start_at else self.stream_clock(stream)()
        return StreamState(watermark_ns=start_ns)

    def _backfill_end(self) -> int:
        if self.plan.backfill_to_ns is not None:
            return self.plan.backfill_to_ns
        return self.clock() - int(self.config.streams.settle * NANOS_PER_SECOND)

    def load_states(self) -> None:
        """Read the checkpoint (errors stop us); streams it lacks start once the API answered."""
        self.store.check_writable()
        if self.plan.fresh:
            self.states = {}
            self.store.load(reset=frozenset(self.plan.streams))
        else:
            self.states = self.store.load(reset=frozenset(self.plan.reset_streams))
        self.store.take_backup()
        self._loaded = True
        if self.plan.reset_streams:
            log.warning(
                "checkpoint reset on request; these streams start over at [streams] start_at",
                streams=self.plan.reset_streams,
            )

    def _start_states(self) -> None:
        """After the first answer from the API: new streams start at its "now", and a
        watermark past its clock (a host clock that ran ahead when it was written) is
        pulled back to a time the API has certainly shown, never skipping a record."""
        now = self.clock()
        for stream in self.plan.streams:
            state = self.states.get(stream)
            if state is None:
                self.states[stream] = self._initial_state(stream)
            elif state.watermark_ns > now + FUTURE_TOLERANCE_NS:
                self._pull_back(stream, state, now)

    def _pull_back(self, stream: str, state: StreamState, now: int) -> None:
        evidence = [t for t in (*state.delivered.values(), self.store.loaded_newest_record_ns) if t]
        target = min(max(evidence), now) if evidence else now
        ahead = (state.watermark_ns - now) / NANOS_PER_SECOND
        self.observer.watermark_pulled_back(stream)
        fields = {
            "stream": stream,
            "ahead_seconds": round(ahead, 1),
            "watermark_ns": state.watermark_ns,
            "pulled_back_to_ns": target,
        }
        if evidence:
            log.warning(
                "checkpoint watermark lies ahead of the API's clock (written while the system clock "
                "was ahead); listing again from the newest record time the API had shown",
                **fields,
            )
        else:
            # The gap ends where listing resumes (rounded up: --to takes seconds), and a backfill
            # needs its config and, for one stream, --streams: a hint that fails as typed helps no one.
            resumed = dt.datetime.fromtimestamp(-(-target // NANOS_PER_SECOND), dt.UTC).isoformat()
            log.error(
                "checkpoint watermark lies ahead of the API's clock and the checkpoint shows no record "
                "time to go back to; listing from now: records between the last real progress and now "
                "may be missing",
                hint=(
                    f"run `auditstream backfill --config FILE --streams {stream} "
                    f"--from <the last time the clock was right> --to {resumed}` to fill that gap"
                ),
                **fields,
            )
        state.watermark_ns = target
        # What came before the evidence was listed, but maybe not yet swept for late records:
        # the sweep goes back two overlaps (the sweep mark trails by an overlap and a period).
        overlap_ns = int(self.config.streams.overlap * NANOS_PER_SECOND)
        state.swept_ns = min(state.final_ns, target - 2 * overlap_ns)

    # -- wiring --------------------------------------------------------------------------

    def _policy(self, state: StreamState) -> WindowPolicy:
        streams = self.config.streams
        return WindowPolicy.from_seconds(
            overlap=streams.overlap,
            settle=streams.settle,
            tail=streams.tail,
            poll=streams.poll_interval,
            page_size=self.config.source.page_size,
            max_length=streams.slice,
            floor_ns=self.plan.backfill_from_ns,
            end_ns=state.end_ns if self.plan.is_backfill else None,
        )

    def _build_pollers(self, client: AuditClient, fanout: FanOut) -> list[StreamPoller]:
        streams = self.config.streams
        normalize = self.config.normalize
        options = PollerOptions(
            poll_interval=streams.poll_interval,
            queue_batches=self.config.engine.queue_batches,
            ahead=AheadBudget(self.config.engine.slices_ahead),
            buffer=BufferBudget(self.config.engine.buffer_bytes),
            any_order=self.plan.is_backfill,
        )
        # Built once and shared: compiled masking rules, and the decryptor's cache of opened
        # query keys (a session's replay chunks reuse its query's key).
        redactor = build_redactor(normalize)
        masker = normalize.masker()
        decryptor = normalize.decryptor()
        pollers: list[StreamPoller] = []
        for name in self.plan.streams:
            spec = STREAMS[name]
            state = self.states[name]
            tracker = None
            if spec.kind in (StreamKind.QUERY, StreamKind.REPLAY) and not self.plan.is_backfill:
                tracker = LongQueryTracker(
                    state,
                    recheck_interval=streams.long_query_recheck,
                    horizon=streams.long_query_horizon,
                    max_open=streams.long_query_max_open,
                    clock=self.stream_clock(name),
                    observer=self.observer,
                )
            normalizer = Normalizer(
                spec,
                redactor,
                keep_credentials=normalize.keep_credentials,
                observer=self.observer,
                masker=masker,
                decryptor=decryptor,
            )
            args = (spec, client, fanout, self.store, self.states, self._policy(state), normalizer, options)
            kwargs: dict[str, Any] = {
                "clock": self.stream_clock(name),
                "tracker": tracker,
                "on_success": self.first_poll,
                "observer": self.observer,
            }
            if spec.kind is StreamKind.REPLAY:
                pollers.append(
                    ReplayPoller(
                        *args,
                        self.stop,
                        read_chunk=chunk_reader(decryptor),
                        new_assembler=replay_assembler(masker),
                        **kwargs,
                    )
                )
            else:
                pollers.append(StreamPoller(*args, self.stop, **kwargs))
        return pollers

    # -- status --------------------------------------------------------------------------

    def sink_health(self) -> dict[str, SinkHealth]:
        return {sink.name: sink.health() for sink in self.sinks or []}

    def lag_seconds(self) -> dict[str, float]:
        """The API's now (as the stream's windows see it) minus each stream's watermark; known
        from the checkpoint on, not only once polling. Negative when a watermark lies in the
        future: never hidden as 0."""
        return {
            name: (self.stream_clock(name)() - self.states[name].watermark_ns) / NANOS_PER_SECOND
            for name in self.plan.streams
            if name in self.states
        }

    def clock_skew_seconds(self) -> float | None:
        """Host clock minus the API's clock (positive: ahead), once the API has answered."""
        if not self.api_clock.observed:
            return None
        return self.api_clock.skew_ns() / NANOS_PER_SECOND

    @property
    def authenticated(self) -> bool:
        """The API accepted the key: the start-up probe (a List call) or any listing since.
        Readiness counts the probe: it is as much a successful call as a poll."""
        return self._connected or any(poller.last_success_ns is not None for poller in self.pollers)

    def records_delivered(self) -> int:
        return sum(poller.records_delivered for poller in self.pollers)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped (live) or finished (backfill); re-raises fatal errors."""
        if not self._loaded:
            self.load_states()
        risk = None if self.plan.is_backfill else self.config.streams.clock_bound_risk()
        if risk is not None:  # a backfill never sweeps: the sweep's timing is not its concern
            log.warning(risk)
        owns_client = self.client is None
        client = self.client or AuditClient(
            client_settings(self.config), clock=self.api_clock, observer=self.observer
        )
        self.client = client
        try:
            if not await self._connect(client):
                return  # stopped while waiting for the API: nothing was listed
            self._connected = True
            self._start_states()
            self._say_what_comes(client)
            # New streams (and pulled-back ones) are in the store before their first batch:
            # a batch's keys belong to a stream row, and a kill must not find keys orphaned.
            await self.store.save(self.states)
            await self._stream(client)
        finally:
            if owns_client:
                await client.close()

    async def _connect(self, client: AuditClient) -> bool:
        """One small call before any window: the key works, and the API's clock is known.

        Retries until the API answers or we are stopped (False); says so when nothing has
        answered after ``CONNECT_NOTICE_SECONDS``. Fatal errors (key, TLS) propagate.
        """
        spec = STREAMS[self.plan.streams[0]]
        notice = asyncio.get_running_loop().call_later(
            CONNECT_NOTICE_SECONDS,
            lambda: log.warning(
                "no answer from the StrongDM API yet; still trying",
                endpoint=self.config.source.endpoint,
                waited_seconds=CONNECT_NOTICE_SECONDS,
                hint="check [source] endpoint, DNS, proxies and firewalls",
            ),
        )
        # From a second up to half a minute: an API back from an outage (or a daemon started
        # before it, as systemd and Kubernetes do) is streaming again within seconds.
        backoff = Backoff(1.0, CONNECT_RETRY_MAX_SECONDS)
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    return await self._unless_stopped(client.probe(spec))
                except ApiError as exc:
                    if exc.fatal:
                        raise
                # The client retried and logged already; keep trying until the API answers.
                failures += 1
                await self._sleep_unless_stopped(backoff.delay(failures))
            return False
        finally:
            notice.cancel()

    def _behind_seconds(self) -> float:
        """Lag beyond which a stream is catching up rather than polling at the live edge: a
        live stream's lag runs up to a poll interval (plus the listing) between polls."""
        streams = self.config.streams
        return 2 * streams.poll_interval + streams.tail

    def _behind(self) -> dict[str, float]:
        limit = self._behind_seconds()
        return {name: lag for name, lag in self.lag_seconds().items() if lag > limit}

    def _say_what_comes(self, client: AuditClient) -> None:
        """One line once the API answered: what is listed now, and whether it is a catch-up."""
        self._started_at_ns = {name: self.states[name].watermark_ns for name in self.plan.streams}
        if self.plan.is_backfill:
            return
        behind = self._behind()
        fields: dict[str, Any] = {
            "endpoint": self.config.source.endpoint,
            "access_key": client.access_key,
            "streams": len(self.plan.streams),
            "poll_interval_seconds": self.config.streams.poll_interval,
        }
        if not behind:
            log.info(
                "the StrongDM API accepted the key; listing every stream now, then every poll interval",
                **fields,
            )
            return
        furthest = max(behind, key=lambda name: behind[name])
        log.info(
            "the StrongDM API accepted the key; catching up, then polling every poll interval",
            **fields,
            streams_behind=len(behind),
            furthest_behind=furthest,
            furthest_behind_seconds=round(behind[furthest]),
            slices_ahead=self.config.engine.slices_ahead,
            progress_every_seconds=CATCH_UP_LOG_EVERY,
        )

    def catch_up_progress(self) -> dict[str, Any]:
        """Where a catch-up stands: streams still behind, the share of the ground covered
        since the start, windows planned and listed, records delivered."""
        now = self.clock()
        behind = self._behind()
        to_cover = covered = 0
        for name, start in self._started_at_ns.items():
            state = self.states.get(name)
            if state is None or now <= start:
                continue
            to_cover += now - start
            covered += min(max(state.watermark_ns - start, 0), now - start)
        furthest = max(behind, key=lambda name: behind[name]) if behind else None
        return {
            "streams_behind": len(behind),
            "furthest_behind": furthest,
            "furthest_behind_seconds": round(behind[furthest]) if furthest else 0,
            "covered_percent": round(100 * covered / to_cover, 1) if to_cover else 100.0,
            "windows_planned": sum(p.planner.windows_planned for p in self.pollers),
            "windows_listed": sum(p.planner.windows_listed for p in self.pollers),
            "records_delivered": self.records_delivered(),
        }

    async def _report_catch_up(self) -> None:
        """Log progress every :data:`CATCH_UP_LOG_EVERY` until every stream is at the live
        edge (looked at every second), then say so once; later lag has its own signals
        (metrics, readiness, the API's and the sinks' warnings)."""
        started = last_said = time.monotonic()
        if not self._behind():
            return
        while not self.stop.is_set():
            await self._sleep_unless_stopped(CATCH_UP_CHECK_EVERY)
            if self.stop.is_set():
                return
            progress = self.catch_up_progress()
            now = time.monotonic()
            if not progress["streams_behind"]:
                log.info(
                    "caught up: every stream is listed at the live edge",
                    took_seconds=round(now - started, 1),
                    records_delivered=progress["records_delivered"],
                    windows_listed=progress["windows_listed"],
                )
                return
            if now - last_said >= CATCH_UP_LOG_EVERY:
                last_said = now
                rate = progress["records_delivered"] / (now - started)
                log.info("catching up", **progress, records_per_second=round(rate))

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Await ``work`` unless a stop comes first: True when it finished (its error propagates)."""
        task = asyncio.create_task(work)
        stopped = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return not task.cancelled()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _stream(self, client: AuditClient) -> None:
        if self.sinks is None:
            self.sinks = build_sinks(self.config, self.observer)
        for sink in self.sinks:
            # Tasks a sink starts inherit this context: their log lines name the sink.
            with structlog.contextvars.bound_contextvars(sink=sink.name):
                await sink.start()
        fanout = FanOut(self.sinks, self.config.engine.sink_failure_pause, self.observer)
        self.pollers = self._build_pollers(client, fanout)
        tasks = [
            asyncio.create_task(p.run(), name=f"poll-{p.spec.name}", context=_stream_context(p.spec.name))
            for p in self.pollers
        ]
        backups = asyncio.create_task(self._back_up_now_and_then(), name="checkpoint-backup")
        helpers = [backups]
        if not self.plan.is_backfill:  # a backfill shows its own progress (engine.backfill)
            helpers.append(asyncio.create_task(self._report_catch_up(), name="catch-up-progress"))
        deadline: list[float] = []
        clean = False
        try:
            await self._supervise(tasks, deadline)
            clean = True
        finally:
            await _cancel_all([*tasks, *helpers])
            await self.store.save(self.states)
            await self._close_sinks(deadline[0] if deadline else None)
            if clean:
                await self.store.back_up()  # restoring it after a clean stop re-sends nothing
            self.store.close()

    async def _back_up_now_and_then(self) -> None:
        """Keep ``<checkpoint>.bak`` recent: restoring it re-sends at most this much."""
        while not self.stop.is_set():
            await self._sleep_unless_stopped(BACKUP_EVERY)
            if not self.stop.is_set():
                await self.store.back_up()

    async def _supervise(self, tasks: list[asyncio.Task[None]], deadline: list[float]) -> None:
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
                    deadline.append(time.monotonic() + self.config.engine.shutdown_timeout)
                    await self._drain(tasks)
                    return
        finally:
            stop_waiter.cancel()

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        """Let in-flight batches finish, bounded by [engine] shutdown_timeout; what is not
        acknowledged by then is abandoned (its checkpoint has not moved: read again next start)."""
        timeout = self.config.engine.shutdown_timeout
        _, still_running = await asyncio.wait(tasks, timeout=timeout)
        if still_running:
            log.warning(
                "shutdown timeout reached; abandoning in-flight batches (they will be re-read on restart)",
                streams=sorted(t.get_name().removeprefix("poll-") for t in still_running),
                timeout_seconds=timeout,
            )

    async def _close_sinks(self, deadline: float | None) -> None:
        """Close every sink, within what is left of the shutdown budget when stopping.

        A sink's close flushes what it holds; against a receiver that keeps failing that
        would retry forever, so past the budget the close is cancelled, which abandons the
        sink's requests (no batch was acknowledged, so nothing is lost).
        """

        async def close(sink: Sink) -> None:
            remaining = None if deadline is None else max(deadline - time.monotonic(), CLOSE_MIN_SECONDS)
            try:
                await asyncio.wait_for(sink.close(), timeout=remaining)
            except TimeoutError:
                log.warning("sink did not close within the shutdown budget; abandoned", sink=sink.name)
            except Exception as exc:
                log.warning("sink failed to close cleanly", sink=sink.name, error=str(exc))

        await asyncio.gather(*(close(sink) for sink in self.sinks or []))


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
