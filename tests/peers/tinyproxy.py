"""Debian's ``tinyproxy`` (1.11) as a real egress proxy on loopback, for the sinks' proxy tests.

It does what a corporate proxy does to our traffic: a ``CONNECT`` tunnel for an ``https://``
receiver (TLS stays end to end), a forwarded request (``POST http://host:port/path``) for an
``http://`` one, and, with ``credentials``, ``BasicAuth``: a request without the right
``Proxy-Authorization`` gets 407 (a CONNECT refused with 407, or a 407 answer). CONNECT is
allowed only to ``connect_ports``, as tinyproxy allows only the ports its config lists.

Run in the foreground (``-d``) with a config of its own; ``LogLevel Connect`` logs every
request line, so ``tunnels()`` and ``forwarded()`` tell a test which requests went through it.
The binary is required: without it the tests fail (``make test`` installs it), never skip.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.helpers import free_port, wait_until

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
_CONNECT = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.[01]")
_FORWARD = re.compile(
    r"Request \(file descriptor \d+\): (GET|POST|HEAD|PUT|OPTIONS) (http://\S+) HTTP/1\.[01]"
)


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Tinyproxy:
    def __init__(
        self, directory: Path, connect_ports: list[int], credentials: tuple[str, str] | None = None
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "tinyproxy.conf"
        self.logfile = directory / "tinyproxy.log"
        self.credentials = credentials
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 30",
            f'LogFile "{self.logfile}"',
            "LogLevel Connect",
            "MaxClients 20",
            *(f"ConnectPort {port}" for port in connect_ports),
        ]
        if credentials is not None:
            lines.append(f"BasicAuth {credentials[0]} {credentials[1]}")
        directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        output = (self.directory / "tinyproxy.out").open("ab")
        self._process = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(self.config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        output.close()

        def ready() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"tinyproxy exited with {self._process.returncode}: {self.log()}")
            return _accepting(self.port)

        wait_until(ready, timeout, "tinyproxy to listen")

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> Tinyproxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tunnels(self) -> list[str]:
        """``host:port`` of every CONNECT the proxy was asked for, in order."""
        return _CONNECT.findall(self.log())

    def forwarded(self) -> list[str]:
        """``METHOD url`` of every plain-http request the proxy was asked to forward."""
        return [f"{method} {url}" for method, url in _FORWARD.findall(self.log())]
