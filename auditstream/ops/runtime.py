"""The live daemon: engine plus metrics/health server plus systemd notifications."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from auditstream.config import AppConfig
from auditstream.engine.engine import Engine, RunPlan
from auditstream.engine.shutdown import install_signal_handlers
from auditstream.ops.sdnotify import SystemdNotifier
from auditstream.ops.server import start_server

log = structlog.get_logger("auditstream")


async def run_daemon(config: AppConfig, plan: RunPlan, engine: Engine | None = None) -> int:
    engine = engine or Engine(config, plan)
    engine.load_states()
    notifier = SystemdNotifier()
    runner = None
    if config.metrics.listen:
        runner = await start_server(engine, config.metrics.listen, config.metrics.max_lag)
    install_signal_handlers(engine.stop)

    async def announce_ready() -> None:
        await engine.first_poll.wait()
        notifier.ready()
        log.info("first poll succeeded; streaming", streams=len(plan.streams))

    helpers = [asyncio.create_task(announce_ready()), asyncio.create_task(notifier.watchdog_loop())]
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
        await engine.run()
    finally:
        notifier.stopping()
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()
    log.info("auditstream stopped; checkpoints saved", delivered=engine.records_delivered())
    return 0
