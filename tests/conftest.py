"""Shared emulator fixtures (kept to the emulator; other suites add their own).

``make_emulator(**overrides)`` starts an in-process emulator on 127.0.0.1 with a free
port on the test's loop and stops it at teardown; ``threaded_emulator_factory`` does the
same on a background thread, for synchronous clients such as the official SDK.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack

import pytest

from auditstream.emulator import Emulator, EmulatorOptions, running_emulator

# Files the tests write (configurations holding the emulator's keys inline, among them) are
# private, as an operator's should be: the daemon warns about secrets other users can read
# (auditstream.ops.exposure), and tests that expect exact output would see that warning.
# Tests of the umask's effects set their own.
os.umask(0o077)

# Test data spans one day, so the Activities default week never cuts it while a test runs.
TEST_DEFAULTS: dict[str, object] = {
    "host": "127.0.0.1",
    "port": 0,
    "records": 200,
    "spread_seconds": 86_400.0,
}


def emulator_options(**overrides: object) -> EmulatorOptions:
    return EmulatorOptions(**{**TEST_DEFAULTS, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def make_emulator() -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    started: list[Emulator] = []

    async def start(**overrides: object) -> Emulator:
        emulator = Emulator(emulator_options(**overrides))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop(grace=0)


@pytest.fixture
async def emulator(make_emulator: Callable[..., Awaitable[Emulator]]) -> Emulator:
    return await make_emulator()


@pytest.fixture
def threaded_emulator_factory() -> Iterator[Callable[..., Emulator]]:
    with ExitStack() as stack:

        def start(**overrides: object) -> Emulator:
            return stack.enter_context(running_emulator(emulator_options(**overrides)))

        yield start


@pytest.fixture
def restores_logging() -> Iterator[None]:
    """For a test that runs the daemon's start-up in this process (``startup.load``, an
    in-process ``check``): logging set up and secrets registered as the daemon does are undone
    afterwards, so that later tests in the same worker see structlog's defaults (which
    ``structlog.testing.capture_logs`` needs) and an empty scrubber registry."""
    import logging

    import structlog

    from auditstream.ops import secrets

    saved = secrets._REGISTRY.forms
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "auditstream"]:
        root.removeHandler(handler)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    secrets._REGISTRY.forms = saved
