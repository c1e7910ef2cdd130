"""Run a real rsyslogd (Debian package) as a test receiver: TCP, UDP and TLS (ossl driver)
inputs on free loopback ports, structured data parsed by mmpstrucdata, every message written
as one JSON line (``%jsonmesg%``: msg, app-name, msgid, structured-data, ``$!`` parse...).

    with Rsyslog(tmp_path) as rs:          # start; stop() / start() again for down-then-up
        ...send to rs.tcp_port / rs.udp_port / rs.tls_port (CA: rs.pki.ca_file)...
        messages = rs.wait_for(count)      # polls the output file (rsyslog buffers writes)

Ports survive a restart, so a sink keeps its configuration across "receiver down, then up".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import async_wait_until, free_port, wait_until
from tests.peers.tls import TestPki, make_pki

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
)
SKIP_REASON = "rsyslogd is not installed (make test installs the Debian packages rsyslog and rsyslog-openssl)"

_CONFIG = """\
global(
  workDirectory="{work}"
  maxMessageSize="1m"
  parser.escapeControlCharactersOnReceive="off"
  net.enableDNS="off"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" maxFrameSize="1000000" maxSessions="1000")
module(load="imudp")
module(load="mmpstrucdata")
template(name="jsonlines" type="string" string="%jsonmesg%\\n")
ruleset(name="capture") {{
  action(type="mmpstrucdata" sd_name.lowercase="off")
  action(type="omfile" file="{output}" template="jsonlines" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" port="{tcp}" ruleset="capture")
input(type="imtcp" port="{tls}" ruleset="capture"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" port="{udp}" ruleset="capture" rcvbufSize="8m")
"""


def _listening(port: int, proto: str) -> bool:
    """Whether something listens on 127.0.0.1/0.0.0.0:``port`` (reads /proc, no connection)."""
    hex_port = f":{port:04X}"
    for name in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(hex_port) and (proto == "udp" or fields[3] == "0A"):
                return True
    return False


class Rsyslog:
    def __init__(self, directory: Path) -> None:
        if RSYSLOGD is None:
            raise RuntimeError(SKIP_REASON)
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.pki: TestPki = make_pki(directory / "pki")
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.output = directory / "messages.jsonl"
        self.config = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.log = directory / "rsyslogd.log"
        (directory / "work").mkdir(exist_ok=True)
        self.config.write_text(
            _CONFIG.format(
                work=directory / "work",
                ca=self.pki.ca_file,
                cert=self.pki.cert_file,
                key=self.pki.key_file,
                output=self.output,
                tcp=self.tcp_port,
                tls=self.tls_port,
                udp=self.udp_port,
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    def check_config(self) -> None:
        assert RSYSLOGD is not None
        subprocess.run([RSYSLOGD, "-N1", "-f", str(self.config)], check=True, capture_output=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        assert RSYSLOGD is not None
        if self.running:
            return
        self.pidfile.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def ready() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self._process.returncode}: {self.log.read_text()}")
            return (
                _listening(self.tcp_port, "tcp")
                and _listening(self.tls_port, "tcp")
                and _listening(self.udp_port, "udp")
            )

        wait_until(ready, timeout, "rsyslogd to listen")

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

    def kill(self) -> None:
        """Die without closing connections gracefully (SIGKILL)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self, skip_torn: bool = False) -> list[dict[str, Any]]:
        """Every complete line rsyslog has written so far, parsed.

        ``skip_torn``: a SIGKILLed rsyslog can leave half a line that its next start appends
        to; tests that kill it skip such lines (what they lost is what they check).
        """
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        parsed = []
        for line in complete.splitlines():
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                if not skip_torn:
                    raise
        return parsed

    def count(self) -> int:
        """How many complete lines rsyslog has written (cheap: no parsing)."""
        try:
            return self.output.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        wait_until(lambda: self.count() >= count, timeout, f"{count} messages in rsyslog's output")
        return self.messages()

    async def async_wait_for(self, count: int, within: float = 20.0) -> list[dict[str, Any]]:
        what = f"{count} messages in rsyslog's output"
        await async_wait_until(lambda: self.count() >= count, within, what)
        return self.messages()
