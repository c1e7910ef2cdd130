"""Signals: the first SIGTERM/SIGINT drains and exits 0; a second exits at once.

Exiting at once is safe because a checkpoint only moves in an SQLite transaction committed
after every routed sink acknowledged (engine.checkpoint): an exit mid-transaction leaves the
last committed state, and whatever was in flight is simply read again on the next start.

A signal that arrives during start-up (reading the configuration, opening the checkpoint,
before the event loop's handlers exist) is held by :func:`hold_signals_until_the_loop` and
acted on as soon as they do: a stop requested a second after launch is still a clean stop,
exit 0, not a death by signal that systemd and Kubernetes would count as a crash.

SIGHUP, by default a death too, is logged and otherwise ignored: it is what logrotate's
``postrotate`` and a habitual ``kill -HUP`` send, and there is nothing to reopen (the file
sink follows a rotation of its file by itself) and nothing reloaded (a configuration change
takes a restart, so that a bad edit never half-applies).
"""

from __future__ import annotations

import asyncio
import os
import signal

import structlog

log = structlog.get_logger("auditstream")

EXIT_IMMEDIATE = 1

_held: list[int] = []


def hold_signals_until_the_loop() -> None:
    """Until :func:`install_signal_handlers` runs, remember SIGTERM/SIGINT instead of dying."""
    _held.clear()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: _held.append(received))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def on_hangup() -> None:
    log.warning(
        "SIGHUP ignored: nothing to reopen (the file sink follows rotations by itself); "
        "restart to apply a configuration change"
    )


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("second signal: exiting immediately; checkpoints stay consistent", signal=name)
            os._exit(EXIT_IMMEDIATE)
        log.info("stopping: flushing in-flight batches, then saving checkpoints", signal=name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    for held in _held:
        on_signal(held)
    _held.clear()
