"""The systemd notify protocol over ``NOTIFY_SOCKET``, without a dependency.

READY=1 once the first poll succeeded, WATCHDOG=1 at half of ``WATCHDOG_USEC`` while the
event loop turns, STOPPING=1 on shutdown. Outside systemd (no socket) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]  # abstract namespace socket
        elif address.startswith("/"):
            self._address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and watchdog_for_us else None
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> bool:
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(message.encode())
            except OSError:
                return False
        return True

    def ready(self) -> None:
        self.notify("READY=1\nSTATUS=streaming audit records")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    async def watchdog_loop(self) -> None:
        """Pet the watchdog while the event loop is alive; a stuck loop gets restarted."""
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)
