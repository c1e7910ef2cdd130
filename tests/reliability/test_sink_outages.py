"""Every sink down for 30 s at the same time, under live traffic, then back: nothing is lost.

The daemon runs as its own process with three sinks, each taking all 29 default streams: an HTTP
receiver answering 503 to everything, a Splunk HEC answering "server is busy" (503, code 9)
and a real rsyslogd that is stopped and, 30 s later, started again. The three outages run
concurrently (one 30 s window rather than three keeps the suite's time down); records keep
arriving meanwhile. Afterwards each receiver must hold every record of the emulator's truth.

rsyslog is stopped only once it has read every byte its TCP stack acknowledged (the daemon
is paused with SIGSTOP for that instant): bytes acknowledged by the kernel but never read by
a receiver that then exits are lost beyond any syslog client's sight (docs/sinks.md); this
test is about the daemon, not about that limit of syslog over TCP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES
from tests.e2e.support import truth_keys, write_daemon_config
from tests.helpers import async_wait_until
from tests.peers.hec import HecReceiver
from tests.peers.http_receiver import HttpReceiver
from tests.peers.rsyslog import RSYSLOGD, SKIP_REASON, Rsyslog
from tests.reliability.support import duplicates, start_daemon, tail

pytestmark = [pytest.mark.reliability, pytest.mark.skipif(RSYSLOGD is None, reason=SKIP_REASON)]

OUTAGE_SECONDS = 30.0
STREAMS = list(DEFAULT_STREAM_NAMES)
HEC_TOKEN = "reliability-hec-token"


def _socket_queues(port: int) -> list[tuple[str, int, int]]:
    """(side, tx_queue, rx_queue) of every established TCP socket on 127.0.0.1:``port``."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state != "01":
            continue
        tx, rx = (int(x, 16) for x in fields[4].split(":"))
        if int(local.split(":")[1], 16) == port:
            found.append(("receiver", tx, rx))
        elif int(remote.split(":")[1], 16) == port:
            found.append(("sender", tx, rx))
    return found


def rsyslog_read_everything(port: int) -> bool:
    """Nothing in flight towards rsyslog and nothing waiting in its sockets to be read."""
    return all(tx == 0 and rx == 0 for _, tx, rx in _socket_queues(port))


def received(events: list[dict]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((event["logType"], event["id"]) for event in events)


def truth_between(emu: Emulator, start_ns: int, end_ns: int) -> int:
    return sum(1 for s in STREAMS for _, t in emu.truth(s) if start_ns <= t < end_ns)


async def test_every_sink_down_for_30s_then_back_loses_nothing(tmp_path, figures):
    options = EmulatorOptions(seed=21, records=200, live=20, live_for=42, live_session_seconds=(0.5, 3.0))
    http = HttpReceiver()
    hec = HecReceiver(token=HEC_TOKEN)
    rsyslog = Rsyslog(tmp_path / "rsyslog")
    log = tmp_path / "daemon.log"
    retry = {"initial": "200ms", "maximum": "2s"}
    async with Emulator(options) as emu, http, hec:
        await asyncio.to_thread(rsyslog.start)
        sinks: list[dict[str, Any]] = [
            {"type": "http", "name": "http", "url": http.url, "retry": retry},
            {"type": "splunk_hec", "name": "hec", "url": hec.base_url, "token": HEC_TOKEN, "retry": retry},
            {
                "type": "syslog",
                "name": "syslog",
                "host": "127.0.0.1",
                "port": rsyslog.tcp_port,
                "retry": retry,
            },
        ]
        config = write_daemon_config(emu, tmp_path, sinks=sinks)
        daemon = start_daemon(config, log)

        def holdings() -> dict[str, collections.Counter[tuple[str, str]]]:
            return {
                "http": received(http.items),
                "hec": received([envelope["event"] for envelope in hec.events]),
                "syslog": received([json.loads(m["msg"]) for m in rsyslog.messages()]),
            }

        try:
            initial = truth_keys(emu, STREAMS)
            await async_wait_until(
                lambda: all(initial <= set(h) for h in holdings().values()), 60, "the backlog at every sink"
            )
            assert daemon.poll() is None, tail(log)

            # -- the outage: all three at once -----------------------------------------------
            os.kill(daemon.pid, signal.SIGSTOP)
            try:
                await async_wait_until(
                    lambda: rsyslog_read_everything(rsyslog.tcp_port), 10, "rsyslog to read what it took"
                )
                await asyncio.to_thread(rsyslog.stop)
                http.faults.fail_with = deque([503] * 100_000)
                hec.busy = True
            finally:
                os.kill(daemon.pid, signal.SIGCONT)
            down_at = time.time_ns()
            attempts = (http.attempts, hec.attempts)
            accepted = (len(http.requests), len(hec.requests))
            deadline = time.monotonic() + OUTAGE_SECONDS
            # The fault lasts 30 s: watch it hold, and the daemon stay up, until then.
            while time.monotonic() < deadline:
                assert daemon.poll() is None, f"the daemon died during the outage:\n{tail(log)}"
                assert (len(http.requests), len(hec.requests)) == accepted, "a down sink accepted data"
                await asyncio.sleep(0.5)
            retried = (http.attempts - attempts[0], hec.attempts - attempts[1])
            assert all(n > 0 for n in retried), f"the daemon kept trying during the outage: {retried}"
            assert not emu.live_finished, "records must still be arriving when the sinks come back"
            http.faults.fail_with.clear()
            hec.busy = False
            await asyncio.to_thread(rsyslog.start)
            up_at = time.time_ns()

            await emu.live_done()
            await async_wait_until(lambda: emu.store.pending_count() == 0, 30, "open sessions to close")
            complete = truth_keys(emu, STREAMS)
            await async_wait_until(
                lambda: all(complete <= set(h) for h in holdings().values()), 90, "every record at every sink"
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(daemon.wait, 30)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(rsyslog.stop)
        assert code == 0, tail(log)
        final = holdings()
        held = truth_between(emu, down_at, up_at)
        produced = emu.live.stats.produced if emu.live else 0
    log_text = log.read_text()
    lost = {name: len(complete - set(h)) for name, h in final.items()}
    dupes = {name: duplicates(h) for name, h in final.items()}
    figures(
        load=f"{options.live:g} records/s live ({produced:,} records); {held:,} arrived during the outage",
        faults=f"HTTP 503, HEC busy, rsyslog stopped: {OUTAGE_SECONDS:.0f}s, concurrently "
        f"({retried[0]} HTTP and {retried[1]} HEC attempts refused)",
        records=len(complete),
        lost=sum(lost.values()),
        duplicates=sum(dupes.values()),
    )
    assert lost == {"http": 0, "hec": 0, "syslog": 0}, lost
    assert held > 0, "records arrived while the sinks were down"
    assert "sink delivery failed; retrying" in log_text
    print(f"duplicates per sink: {dupes}; outage began {dt.datetime.fromtimestamp(down_at / 1e9)}")
