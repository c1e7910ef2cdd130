"""Run an emulator on its own event loop in a background thread.

For code under test that is synchronous (the official SDK) or runs its own loop or
process: the emulator keeps serving while the test thread blocks. Ground-truth calls
(``truth``, ``insert``...) are safe from any thread; the store takes a lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from auditstream.emulator.emulator import Emulator
from auditstream.emulator.options import EmulatorOptions


@contextmanager
def running_emulator(options: EmulatorOptions | None = None, *, timeout: float = 120.0) -> Iterator[Emulator]:
    """``with running_emulator(opts) as emu:`` — started on entry, stopped on exit."""
    emulator = Emulator(options)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(emulator.start())
        except BaseException as exc:
            failure.append(exc)
            return
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="auditstream-emulator", daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout):
            raise TimeoutError(f"the emulator did not start within {timeout}s")
        if failure:
            raise failure[0]
        yield emulator
    finally:
        if not failure and thread.is_alive():
            asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
