"""One-shot export of a past period, resumable, with progress on a terminal.

Exits 0 once every stream reached the end, 1 when interrupted: a Kubernetes Job or a systemd
unit then sees an unfinished backfill as failed and may simply run it again to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

import structlog

from auditstream.config import AppConfig
from auditstream.engine.engine import Engine, RunPlan
from auditstream.engine.observer import Observer
from auditstream.engine.shutdown import install_signal_handlers

log = structlog.get_logger("auditstream.backfill")


def progress_fraction(engine: Engine) -> float:
    """How much of the period every stream has covered, averaged over the streams."""
    fractions = []
    for name in engine.plan.streams:
        state = engine.states.get(name)
        if state is None:  # starts once the API has answered
            fractions.append(0.0)
            continue
        start = engine.plan.backfill_from_ns or 0
        end = state.end_ns or start
        span = max(end - start, 1)
        fractions.append(min(max((state.watermark_ns - start) / span, 0.0), 1.0))
    return sum(fractions) / len(fractions) if fractions else 1.0


def format_progress(records: int, elapsed: float, fraction: float) -> str:
    rate = records / elapsed if elapsed > 0 else 0.0
    eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("inf")
    eta_text = f"{eta:,.0f}s" if eta != float("inf") else "?"
    return f"{fraction * 100:5.1f}%  {records:,} records  {rate:,.0f} records/s  ETA {eta_text}"


PROGRESS_EVERY_ON_A_TERMINAL = 0.5
PROGRESS_EVERY_AS_LINES = 10.0
"""``--progress`` into a file or a journal: whole lines, less often. A terminal's line is
redrawn in place (``\r`` and erase-to-end-of-line), which elsewhere is control bytes in a log."""


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


async def _show_progress(engine: Engine, started: float, out: TextIO, terminal: bool) -> None:
    while True:
        line = format_progress(
            engine.records_delivered(), time.monotonic() - started, progress_fraction(engine)
        )
        out.write(f"\r{line}\033[K" if terminal else f"{line}\n")
        out.flush()
        await asyncio.sleep(PROGRESS_EVERY_ON_A_TERMINAL if terminal else PROGRESS_EVERY_AS_LINES)


async def run_backfill(
    config: AppConfig,
    plan: RunPlan,
    progress: bool,
    out: TextIO | None = None,
    observer: Observer | None = None,
) -> int:
    out = sys.stderr if out is None else out  # the current one, not the one at import
    engine = Engine(config, plan, observer=observer)
    engine.load_states()
    install_signal_handlers(engine.stop)
    started = time.monotonic()
    terminal = _is_terminal(out)
    reporter = asyncio.create_task(_show_progress(engine, started, out, terminal)) if progress else None
    log.info("backfill starting", streams=len(plan.streams), checkpoint=str(plan.checkpoint_path))
    try:
        await engine.run()
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            if terminal:
                out.write("\n")
    elapsed = time.monotonic() - started
    records = engine.records_delivered()
    # Stopped before the API answered, no poller ran: that is not a complete backfill.
    complete = len(engine.pollers) == len(plan.streams) and all(poller.finished for poller in engine.pollers)
    summary = (
        f"backfill {'complete' if complete else 'interrupted (run the same command again to resume)'}: "
        f"{records:,} records from {len(plan.streams)} streams in {elapsed:,.1f}s "
        f"({records / elapsed if elapsed else 0:,.0f} records/s); checkpoint {plan.checkpoint_path}"
    )
    print(summary, file=out)
    return 0 if complete else 1
