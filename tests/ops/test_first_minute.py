"""The first minute of a deployment: ``auditstream run`` as systemd and Kubernetes start it,
with the shipped ``[streams]`` settings (a 30 s poll interval), against a live emulator.

It once listed nothing for a whole poll interval after the start-up probe had succeeded:
``/readyz`` answered 503 "no successful call to the StrongDM API yet", systemd waited 30 s
for READY=1 and the log said nothing in between.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from auditstream.ops.logging import configure_logging
from tests.e2e.support import daemon_config, live_engine, read_events
from tests.helpers import async_wait_until, free_port
from tests.ops.support import CLI, running_daemon, with_metrics_listen, write_config
from tests.ops.test_sdnotify import bind_datagram, socket_path

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "auditstream.example.toml"
FIRST_MINUTE_DEADLINE = 5.0
"""READY=1 and /readyz 200 this soon after the process starts (the issue's target)."""


def shipped_config(emu: Any, tmp_path: Path, listen: str) -> dict[str, Any]:
    """The example configuration's [streams] and [engine] as shipped; the source, sink,
    checkpoint and metrics address are this test's."""
    example = tomllib.loads(EXAMPLE.read_text())
    assert example["streams"]["poll_interval"] == "30s"
    return {
        "source": {
            "endpoint": emu.address,
            "access_key": emu.options.access_key,
            "secret_key": emu.options.secret_key,
            "insecure": True,
        },
        "streams": example["streams"],
        "checkpoint": {"path": str(tmp_path / "state" / "checkpoints.db")},
        "sinks": [{"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl"), "fsync": False}],
        "metrics": {"listen": listen},
        "engine": example["engine"],
        "logging": {"format": "json"},
    }


async def test_a_fresh_run_is_ready_and_delivering_within_seconds_at_the_shipped_poll_interval(
    make_emulator, tmp_path
):
    emu = await make_emulator(records=50, live=5)
    listen = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "config.toml", shipped_config(emu, tmp_path, listen))
    path = socket_path(tmp_path)
    loop = asyncio.get_running_loop()
    with bind_datagram(str(path)) as sock:
        env = {**os.environ, "NOTIFY_SOCKET": str(path)}
        stderr = tmp_path / "stderr"
        with stderr.open("wb") as err:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *CLI, "run", "--config", str(config),
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        try:

            async def ready_message() -> float:
                while True:
                    if (await loop.sock_recv(sock, 4096)).startswith(b"READY=1"):
                        return time.monotonic() - started

            async def readyz_200() -> float:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                    while True:
                        if process.returncode is not None:
                            raise AssertionError(stderr.read_text())
                        try:
                            async with http.get(f"http://{listen}/readyz") as response:
                                if response.status == 200:
                                    return time.monotonic() - started
                        except aiohttp.ClientConnectionError:
                            pass
                        await asyncio.sleep(0.05)

            async with asyncio.timeout(FIRST_MINUTE_DEADLINE + 1):
                ready_at, readyz_at = await asyncio.gather(ready_message(), readyz_200())
            out = tmp_path / "out.jsonl"
            await async_wait_until(lambda: read_events(out), 10, "the first delivered record")
            delivered_at = time.monotonic() - started
        finally:
            if process.returncode is None:
                process.terminate()
            code = await asyncio.wait_for(process.wait(), 30)
    log = stderr.read_text()
    assert ready_at <= FIRST_MINUTE_DEADLINE, f"READY=1 after {ready_at:.1f}s\n{log}"
    assert readyz_at <= FIRST_MINUTE_DEADLINE, f"/readyz 200 after {readyz_at:.1f}s\n{log}"
    assert delivered_at < 30, f"the first record after {delivered_at:.1f}s: a poll interval late"
    assert code == 0, log
    events = [orjson.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    starting = events.index("auditstream starting")
    assert "listing every stream now" in events[starting + 1], events


async def test_readiness_counts_the_start_up_probe(make_emulator, tmp_path):
    """The probe is a List call with the configured key: /readyz says authenticated from it
    on, even while no window is due yet (here a settle of an hour holds every listing)."""
    emu = await make_emulator(records=20)
    config = daemon_config(
        emu, tmp_path, streams={"include": ["activities"], "start_at": "now", "settle": "1h"}
    )
    async with running_daemon(with_metrics_listen(config, max_lag=7200.0)) as daemon:

        async def body_when_ready() -> dict[str, Any] | None:
            status, body = await daemon.readyz()
            return body if status == 200 else None

        body = await async_wait_until(body_when_ready, 10, "/readyz 200 after the probe")
        assert body["authenticated"] is True and body["reasons"] == []
        assert not any(p.last_success_ns for p in daemon.engine.pollers), "no listing yet: the probe counted"


async def test_a_catch_up_says_what_it_does_and_when_it_is_done(
    make_emulator, tmp_path, monkeypatch, restores_logging
):
    """A start eight days behind: one line naming the streams behind, progress lines with
    windows and records while it catches up, then "caught up" once, at the live edge."""
    from auditstream.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "CATCH_UP_LOG_EVERY", 0.2)
    monkeypatch.setattr(engine_module, "CATCH_UP_CHECK_EVERY", 0.05)
    emu = await make_emulator(records=3000, latency_ms=20)
    config = daemon_config(emu, tmp_path, streams={"include": ["activities", "queries"]})
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    engine = live_engine(config)
    task = asyncio.create_task(engine.run())

    def said() -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in buffer.getvalue().splitlines()]

    def caught_up() -> bool:
        if task.done():
            task.result()
        return any(line["event"].startswith("caught up") for line in said())

    try:
        await async_wait_until(caught_up, 60, "the catch-up to end")
    finally:
        engine.stop.set()
        await asyncio.wait_for(task, 30)
    lines = said()
    first = next(line for line in lines if "catching up, then polling" in line["event"])
    assert first["streams_behind"] == 2 and first["furthest_behind_seconds"] >= 8 * 86400 - 60
    progress = [line for line in lines if line["event"] == "catching up"]
    assert progress, [line["event"] for line in lines]
    assert {
        "streams_behind",
        "windows_planned",
        "windows_listed",
        "covered_percent",
        "records_delivered",
    } <= set(progress[0])
    done = [line for line in lines if line["event"].startswith("caught up")]
    assert len(done) == 1 and done[0]["records_delivered"] > 0
