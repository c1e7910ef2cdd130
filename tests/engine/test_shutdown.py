"""A stop requested during start-up is a clean stop once the event loop is running."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from auditstream.engine.shutdown import hold_signals_until_the_loop, install_signal_handlers


@pytest.fixture
def restored_signal_handlers():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


async def stop_requested_once_the_loop_runs() -> bool:
    """Install the loop's handlers as the daemon does: is a stop already requested?"""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        return stop.is_set()
    finally:
        for held in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().remove_signal_handler(held)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_loop_stops_the_engine_once_it_runs(restored_signal_handlers, signum):
    hold_signals_until_the_loop()
    os.kill(os.getpid(), signum)  # the process survives: without the hold, SIGTERM ends pytest here
    assert asyncio.run(stop_requested_once_the_loop_runs()) is True


def test_no_signal_before_the_loop_leaves_the_engine_running(restored_signal_handlers):
    hold_signals_until_the_loop()
    assert asyncio.run(stop_requested_once_the_loop_runs()) is False
