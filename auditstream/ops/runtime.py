"""The live daemon: engine plus metrics/health server plus systemd notifications.

After a fatal error (the API refused the key, its certificate is not trusted, the checkpoint
cannot be written) the daemon keeps ``/metrics`` and ``/readyz`` up for
``[metrics] linger_after_error`` (30 s by default) before exiting 1, so that Prometheus
scrapes *why* it stopped (``auditstream_api_credentials_rejected``) instead of seeing only
a target that vanished.
A signal ends that wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from auditstream.config import AppConfig
from auditstream.engine.engine import Engine, RunPlan
from auditstream.engine.shutdown import install_signal_handlers
from auditstream.ops import metrics
from auditstream.ops.observers import PrometheusObserver
from auditstream.ops.sdnotify import SystemdNotifier
from auditstream.ops.server import start_server
from auditstream.ops.status import DaemonStatus

log = structlog.get_logger("auditstream")


def initialize_metrics(config: AppConfig, plan: RunPlan) -> None:
    routes = {stream: [s.name for s in config.sinks if s.routes(stream)] for stream in plan.streams}
    metrics.initialize_series(routes, [s.name for s in config.sinks])


async def _linger(seconds: float, handle_signals: bool) -> None:
    """Serve metrics a while longer after a fatal error; a signal cuts it short."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, done.set)
    log.info("serving /metrics and /readyz before exiting", seconds=seconds)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=seconds)


async def run_daemon(
    config: AppConfig,
    plan: RunPlan,
    engine: Engine | None = None,
    *,
    handle_signals: bool = True,
    notifier: SystemdNotifier | None = None,
    fatal_linger: float | None = None,
) -> int:
    """Run until stopped; 0 after a clean stop, fatal errors re-raised (the CLI exits 1).

    ``handle_signals=False`` is for running in-process (tests): stop with ``engine.stop``.
    """
    engine = engine or Engine(config, plan, observer=PrometheusObserver())
    engine.load_states()
    notifier = notifier or SystemdNotifier()
    status = DaemonStatus(engine, config.metrics.max_lag, stopping=engine.stop.is_set)
    initialize_metrics(config, plan)
    metrics.STATUS.set_source(status.snapshot)
    runner = await start_server(status, config.metrics.listen) if config.metrics.listen else None
    if handle_signals:
        install_signal_handlers(engine.stop)

    async def announce_ready() -> None:
        await engine.first_poll.wait()
        notifier.ready()
        log.info("first poll succeeded; streaming", streams=len(plan.streams))

    async def announce_stopping() -> None:
        await engine.stop.wait()
        notifier.stopping()

    helpers = [
        asyncio.create_task(announce_ready()),
        asyncio.create_task(announce_stopping()),
        asyncio.create_task(notifier.watchdog_loop()),
    ]
    log.info(
        "auditstream starting",
        endpoint=config.source.endpoint,
        access_key=config.source.access_key,
        streams=len(plan.streams),
        sinks=[s.name for s in config.sinks],
        checkpoint=str(plan.checkpoint_path),
        metrics=config.metrics.listen,
    )
    try:
        try:
            await engine.run()
        except Exception as exc:
            status.stopped_by(exc)
            notifier.status(f"stopped on an error: {exc}")
            log.error("stopped on an error", error=str(exc), error_type=type(exc).__name__)
            linger = config.metrics.linger_after_error if fatal_linger is None else fatal_linger
            if runner is not None and linger > 0:
                await _linger(linger, handle_signals)
            raise
    finally:
        notifier.stopping()
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()
        metrics.STATUS.set_source(None)
    log.info("auditstream stopped; checkpoints saved", delivered=engine.records_delivered())
    return 0
