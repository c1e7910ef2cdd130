"""The systemd notify protocol, received on real AF_UNIX datagram sockets."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from auditstream.ops.sdnotify import SystemdNotifier
from tests.e2e.support import daemon_config_document, write_toml
from tests.helpers import free_port


def bind_datagram(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


def socket_path(tmp_path: Path) -> Path:
    """tmp_path, unless it is too long for sun_path (108 bytes)."""
    path = tmp_path / "notify.sock"
    return path if len(str(path)) < 100 else Path(tempfile.mkdtemp(prefix="sdn")) / "notify.sock"


def test_path_socket_receives_each_message(tmp_path):
    path = socket_path(tmp_path)
    with bind_datagram(str(path)) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        notifier.ready()
        notifier.status("catching up\n  3 streams")
        notifier.stopping()
        notifier.stopping()  # once only
        got = [sock.recv(4096).decode() for _ in range(3)]
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
    assert got == ["READY=1\nSTATUS=streaming audit records", "STATUS=catching up 3 streams", "STOPPING=1"]


def test_abstract_namespace_socket():
    name = f"auditstream-test-{uuid.uuid4().hex}"
    with bind_datagram("\0" + name) as sock:
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path):
    assert not SystemdNotifier({}).notify("READY=1")
    assert not SystemdNotifier({"NOTIFY_SOCKET": "relative/is/invalid"}).enabled
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled and not gone.notify("READY=1")  # a vanished socket must not raise


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env, interval):
    assert SystemdNotifier({"NOTIFY_SOCKET": "/run/x", **env}).watchdog_interval == interval


async def test_daemon_notifies_ready_after_first_poll_pets_the_watchdog_and_says_stopping(
    make_emulator, tmp_path
):
    """The daemon as systemd runs it: READY=1 only once the API answered (the emulator is not
    even listening at first), WATCHDOG=1 every WATCHDOG_USEC/2 throughout, STOPPING=1 on
    SIGTERM, then exit 0."""
    port = free_port()
    document = daemon_config_document(f"127.0.0.1:{port}", "placeholder", "cGxhY2Vob2xkZXI=", tmp_path)
    emu_options = {"port": port, "records": 20}
    from auditstream.emulator import DEMO_ACCESS_KEY, DEMO_SECRET_KEY

    document["source"].update(access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY, max_transient_retries=0)
    document["streams"]["include"] = ["activities"]
    config = write_toml(tmp_path / "config.toml", document)
    path = socket_path(tmp_path)
    loop = asyncio.get_running_loop()
    messages: list[tuple[float, str]] = []
    with bind_datagram(str(path)) as sock:

        async def receive(until: str, within: float, times: int = 1) -> None:
            async with asyncio.timeout(within):
                while times:
                    data = (await loop.sock_recv(sock, 4096)).decode()
                    messages.append((time.monotonic(), data))
                    if data.startswith(until):
                        times -= 1

        env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
        with (tmp_path / "stderr").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "auditstream.cli", "run", "--config", str(config),
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        try:
            # The daemon is up and pets the watchdog (every 0.1 s) while no API answers.
            await receive("WATCHDOG=1", 30, times=6)
            assert not [m for _, m in messages if m.startswith("READY")], messages
            emu = await make_emulator(**emu_options)
            # Streaming within seconds of the API appearing: neither a fixed half-minute pause
            # between attempts nor gRPC's reconnect backoff (up to 120 s) stands in the way.
            await receive("READY=1", 10)
            assert emu.stats.pages_served["activities"] >= 1
            ready_at = messages[-1][0]
            await receive("WATCHDOG=1", 5)  # and goes on after READY
            process.send_signal(signal.SIGTERM)
            await receive("STOPPING=1", 20)
            assert await asyncio.wait_for(process.wait(), 30) == 0, (tmp_path / "stderr").read_text()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    kinds = [m.split("\n")[0] for _, m in messages]
    assert kinds.count("READY=1") == 1 and kinds.count("STOPPING=1") == 1
    assert kinds.index("READY=1") < kinds.index("STOPPING=1")
    assert all(t >= ready_at for t, m in messages if m.startswith("STOPPING"))
    assert messages[0][1] == "WATCHDOG=1"
    # Half of WATCHDOG_USEC (0.2 s): not slower (systemd would kill us), not a busy loop.
    pets = [t for t, m in messages if m == "WATCHDOG=1"]
    gaps = sorted(b - a for a, b in itertools.pairwise(pets))
    assert 0.09 <= gaps[len(gaps) // 2] <= 0.19, gaps
