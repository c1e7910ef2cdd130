"""Throughput of each sink to a loopback receiver, in events per second.

    .venv/bin/python -m bench.bench_sinks [--events 50000] [--streams 4] [--repeat 3]

Each run sends ``--events`` synthetic activity events (about 600 bytes of JSON each) in
batches of 500 from ``--streams`` concurrent streams, and stops the clock when every
``send()`` has returned, i.e. when the receiver acknowledged everything (HTTP 2xx, HEC code
0, TCP acknowledgement for syslog, fsync for file). The HTTP and HEC receivers run in this
same process and event loop, so those numbers include the receiver's own parsing cost and
are lower bounds; rsyslogd runs as its own process (skipped if not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter

from auditstream.sinks.base import Envelope
from auditstream.sinks.registry import SinkSettings, create_sink
from tests.peers.hec import HecReceiver
from tests.peers.http_receiver import HttpReceiver
from tests.peers.rsyslog import RSYSLOGD, Rsyslog

BATCH = 500
ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)


def make_events(count: int, streams: int) -> dict[str, list[Envelope]]:
    base = 1_714_564_800_000_000_000
    per_stream: dict[str, list[Envelope]] = {}
    for s in range(streams):
        stream = ["activities", "queries", "roles_history", "accounts_history"][s % 4] + f"_{s}"
        per_stream[stream] = [
            Envelope(
                stream=stream,
                key=f"{stream}-{i}",
                time_ns=base + i * 1_000_000,
                event={
                    "id": f"a{s:02d}{i:010d}",
                    "stream": stream,
                    "timestamp": "2024-05-01T12:00:00.123456Z",
                    "actor": {
                        "id": "a-0123456789abcdef",
                        "email": "alice@example.com",
                        "name": "Alice Example",
                    },
                    "activity": "user logged into the local client",
                    "description": "Alice Example logged into the local client from 203.0.113.7.",
                    "ip_address": "203.0.113.7",
                    "entities": [{"id": "rs-0123456789abcdef", "type": "resource", "name": "prod-postgres"}],
                    "user_agent": "sdm-client/43.10.0 (linux; amd64)",
                    "seq": i,
                },
            )
            for i in range(count // streams)
        ]
    return per_stream


async def run(config: dict[str, Any], events: dict[str, list[Envelope]], state_dir: Path) -> float:
    sink = create_sink(ADAPTER.validate_python(config), None, state_dir)
    await sink.start()

    async def one_stream(batch: list[Envelope]) -> None:
        for start in range(0, len(batch), BATCH):
            await sink.send(batch[start : start + BATCH])

    started = time.perf_counter()
    await asyncio.gather(*(one_stream(batch) for batch in events.values()))
    elapsed = time.perf_counter() - started
    await sink.close()
    return sum(len(b) for b in events.values()) / elapsed


@contextlib.contextmanager
def stdout_to_devnull() -> Any:
    saved = sys.stdout
    with open("/dev/null", "w") as devnull:
        sys.stdout = devnull
        try:
            yield
        finally:
            sys.stdout = saved


@contextlib.asynccontextmanager
async def receivers(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    async with HttpReceiver() as http, HecReceiver(token="bench") as hec:
        rsyslog = Rsyslog(tmp / "rsyslog") if RSYSLOGD else None
        if rsyslog:
            rsyslog.start()
        try:
            yield {"http": http, "hec": hec, "rsyslog": rsyslog}
        finally:
            if rsyslog:
                rsyslog.stop()


def cases(peers: dict[str, Any], tmp: Path) -> list[tuple[str, dict[str, Any]]]:
    batch = {"max_events": BATCH, "max_age": 0}
    http: HttpReceiver = peers["http"]
    hec = {"type": "splunk_hec", "url": peers["hec"].base_url, "token": "bench", "batch": batch}
    out: list[tuple[str, dict[str, Any]]] = [
        ("file (fsync)", {"type": "file", "name": "f1", "path": str(tmp / "f1.jsonl"), "batch": batch}),
        (
            "file (no fsync)",
            {"type": "file", "name": "f2", "path": str(tmp / "f2.jsonl"), "fsync": False, "batch": batch},
        ),
        ("stdout (/dev/null)", {"type": "stdout", "batch": batch}),
        ("http ndjson", {"type": "http", "name": "h1", "url": http.url, "batch": batch}),
        ("http ndjson gzip", {"type": "http", "name": "h2", "url": http.url, "gzip": True, "batch": batch}),
        ("splunk_hec gzip", {**hec, "name": "s1"}),
        ("splunk_hec plain", {**hec, "name": "s2", "gzip": False}),
        ("splunk_hec cef", {**hec, "name": "s3", "format": "cef"}),
    ]
    rsyslog: Rsyslog | None = peers["rsyslog"]
    if rsyslog is not None:
        syslog = {"type": "syslog", "host": "127.0.0.1", "batch": batch}
        tls = {"transport": "tls", "tls": {"ca_file": str(rsyslog.pki.ca_file), "server_name": "localhost"}}
        out += [
            ("syslog tcp (rsyslog)", {**syslog, "name": "y1", "port": rsyslog.tcp_port}),
            (
                "syslog tls (rsyslog)",
                {**syslog, **tls, "name": "y2", "port": rsyslog.tls_port},
            ),
            ("syslog udp (rsyslog)", {**syslog, "name": "y3", "port": rsyslog.udp_port, "transport": "udp"}),
        ]
    return out


async def settled_count(rsyslog: Rsyslog) -> int:
    """rsyslog's output line count once it stops growing (it buffers and lags behind)."""
    last, stable = -1, 0
    while stable < 3:
        count = rsyslog.count()
        stable = stable + 1 if count == last else 0
        last = count
        await asyncio.sleep(0.2)
    return last


async def bench(total: int, streams: int, repeat: int) -> list[tuple[str, float]]:
    events = make_events(total, streams)
    sent = sum(len(b) for b in events.values())
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        async with receivers(tmp) as peers:
            rsyslog: Rsyslog | None = peers["rsyslog"]
            for label, config in cases(peers, tmp):
                before = await settled_count(rsyslog) if rsyslog and config["type"] == "syslog" else 0
                rates = []
                for _ in range(repeat):
                    with stdout_to_devnull() if config["type"] == "stdout" else contextlib.nullcontext():
                        rates.append(await run(config, events, tmp / "state"))
                rate = statistics.median(rates)
                results.append((label, rate))
                note = ""
                if rsyslog and config["type"] == "syslog":
                    written = await settled_count(rsyslog) - before
                    note = f"  (rsyslog wrote {written:,} of {sent * repeat:,})"
                spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
                print(f"{label:22s} {rate:>9,.0f} events/s  [{spread}]{note}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs per sink; the median is reported")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    shape = f"{args.events:,} events, {args.streams} streams at once, batches of {BATCH}"
    print(f"{shape}, median of {args.repeat} runs")
    results = asyncio.run(bench(args.events, args.streams, args.repeat))
    print(json.dumps({label: round(rate) for label, rate in results}))


if __name__ == "__main__":
    main()
