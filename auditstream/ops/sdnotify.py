"""The systemd notify protocol over ``NOTIFY_SOCKET``, without a dependency.

READY=1 once the first poll succeeded (so ``systemctl start`` returns when data flows, and
a key that is refused fails the start), WATCHDOG=1 at half of ``WATCHDOG_USEC`` while the
event loop turns (a wedged loop gets restarted), STOPPING=1 as soon as shutdown begins.
Outside systemd (no socket) every call is a no-op; a failed send is ignored, because the
notification socket going away must not take the daemon with it.
"""

from __future__ import annotations

import asyncio
import os
import socket

from auditstream.ops.secrets import redact


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
        self._stopping_sent = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one datagram; True if it went out."""
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message.encode(), self._address)
            except OSError:
                return False
        return True

    def ready(self) -> None:
        self.notify("READY=1\nSTATUS=streaming audit records")

    def status(self, text: str) -> None:
        """STATUS= (``systemctl status`` shows it); it quotes errors, so it is scrubbed."""
        self.notify("STATUS=" + " ".join(redact(text).split()))

    def stopping(self) -> None:
        """STOPPING=1, once, however many paths lead to shutdown."""
        if not self._stopping_sent:
            self._stopping_sent = True
            self.notify("STOPPING=1")

    async def watchdog_loop(self) -> None:
        """Pet the watchdog while the event loop is alive; a stuck loop gets restarted."""
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)
