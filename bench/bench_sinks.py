"""Throughput of each sink to a loopback receiver, in events per second.

    .venv/bin/python -m bench.bench_sinks [--events 50000] [--streams 4] [--repeat 3]
        [--only TYPE,...] [--write]

Each run sends ``--events`` synthetic activity events (about 600 bytes of JSON each) in
batches of 500 from ``--streams`` concurrent streams, and stops the clock when every
``send()`` has returned, i.e. when the receiver acknowledged everything (HTTP 2xx, HEC code
0, TCP acknowledgement for syslog, fsync for file). The HTTP and HEC receivers run in this
same process and event loop, so those numbers include the receiver's own parsing cost and
are lower bounds; rsyslogd runs as its own process (skipped if not installed).

The AWS sinks (s3, cloudwatch_logs) send to moto server, a separate process (skipped if the
test extra is not installed), with their own default batch settings (objects, PutLogEvents
calls); they also report how many API calls 100,000 events took. moto is far slower than
AWS, so their rates are those of the emulator. The SIEM-native sinks (azure_monitor,
elasticsearch, datadog) send over TLS to the strict stand-ins of tests/peers (Entra ID and Logs
Ingestion, ``_bulk``, the Datadog intake), in this same process: lower bounds again, and they
report requests (calls) per 100,000 events. ``--only`` runs only the given sink types;
``--write`` puts the table into BENCHMARKS.md (block ``sinks``, or ``sinks-<types>`` with
``--only``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter

from auditstream.sinks.base import Envelope, Sink
from auditstream.sinks.registry import SinkSettings, create_sink
from bench.machine import command_line, replace_block
from tests.peers.azure import EntraReceiver, LogsIngestionReceiver
from tests.peers.datadog import DatadogReceiver
from tests.peers.elastic import ElasticReceiver
from tests.peers.hec import HecReceiver
from tests.peers.http_receiver import HttpReceiver
from tests.peers.rsyslog import RSYSLOGD, Rsyslog
from tests.peers.tls import make_pki

BATCH = 500
ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)
# The API calls that carry events, per AWS sink type (calls per 100,000 events are reported).
AWS_CALLS = {"s3": ("PutObject", "UploadPart"), "cloudwatch_logs": ("PutLogEvents",)}
SIEM = ("azure_monitor", "elasticsearch", "datadog")
TENANT, CLIENT, SECRET = "72f988bf-86f1-41af-91ab-2d7cd011db47", "bench-client", "bench-client-secret"
DCR, ES_KEY = "dcr-00112233445566778899aabbccddeeff", "bench-es-api-key"


def make_events(count: int, streams: int) -> dict[str, list[Envelope]]:
    # Recent times: CloudWatch Logs refuses events older than 14 days (other sinks do not care).
    base = time.time_ns() - 3600 * 1_000_000_000
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


def aws_calls(sink: Sink, kind: str) -> int:
    """Event-carrying API calls an AWS sink made (0 for other sinks)."""
    client = getattr(getattr(sink, "transport", None), "client", None)
    calls = getattr(client, "calls", {})
    return sum(calls.get(operation, 0) for operation in AWS_CALLS.get(kind, ()))


async def run(
    config: dict[str, Any], events: dict[str, list[Envelope]], state_dir: Path
) -> tuple[float, int]:
    """Events per second, and the event-carrying API calls made (AWS sinks only)."""
    sink = create_sink(ADAPTER.validate_python(config), None, state_dir)
    await sink.start()

    async def one_stream(batch: list[Envelope]) -> None:
        for start in range(0, len(batch), BATCH):
            await sink.send(batch[start : start + BATCH])

    started = time.perf_counter()
    await asyncio.gather(*(one_stream(batch) for batch in events.values()))
    elapsed = time.perf_counter() - started
    await sink.close()
    return sum(len(b) for b in events.values()) / elapsed, aws_calls(sink, config["type"])


@contextlib.contextmanager
def stdout_to_devnull() -> Any:
    saved = sys.stdout
    with open("/dev/null", "w") as devnull:
        sys.stdout = devnull
        try:
            yield
        finally:
            sys.stdout = saved


def moto_server() -> Any:
    """moto server for the AWS sinks, with the environment its clients need; None without it."""
    try:
        from tests.peers.moto import MotoServer, aws_environment, moto_server_command

        moto_server_command()
    except (ImportError, RuntimeError):
        return None
    os.environ.update(aws_environment())
    return MotoServer()


@contextlib.asynccontextmanager
async def siem_receivers(tmp: Path, kinds: set[str]) -> AsyncIterator[dict[str, Any]]:
    """The SIEM stand-ins over TLS with a private CA, started only when asked for."""
    if not kinds & set(SIEM):
        yield {}
        return
    pki = make_pki(tmp / "pki")
    entra = EntraReceiver(tenant_id=TENANT, apps={CLIENT: SECRET}, ssl_context=pki.server_context())
    streams = {f"Custom-Bench_{stream}" for stream in make_events(4, 4)}
    ingestion = LogsIngestionReceiver(entra=entra, dcrs={DCR: streams}, ssl_context=pki.server_context())
    ingestion.grant(CLIENT, DCR)
    elastic = ElasticReceiver(api_keys={"bench": ES_KEY}, ssl_context=pki.server_context())
    datadog = DatadogReceiver(ssl_context=pki.server_context())
    async with entra, ingestion, elastic, datadog:
        yield {"pki": pki, "entra": entra, "ingestion": ingestion, "elastic": elastic, "datadog": datadog}


def siem_cases(peers: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if not peers:
        return []
    tls = {"ca_file": str(peers["pki"].ca_file)}
    azure = {
        "type": "azure_monitor",
        "name": "z1",
        "endpoint": peers["ingestion"].base_url,
        "dcr_immutable_id": DCR,
        "stream_name": "Custom-Bench_{stream}",
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "authority_host": peers["entra"].base_url,
        "tls": tls,
    }
    api_key = base64.b64encode(f"bench:{ES_KEY}".encode()).decode()
    elastic = {"type": "elasticsearch", "name": "e1", "urls": [peers["elastic"].base_url], "api_key": api_key}
    datadog = {"type": "datadog", "name": "d1", "endpoint_url": peers["datadog"].base_url}
    return [
        ("azure_monitor (TLS)", azure),
        ("elasticsearch (TLS)", {**elastic, "tls": tls}),
        ("datadog (TLS)", {**datadog, "api_key": peers["datadog"].api_key, "tls": tls}),
    ]


def siem_requests(peers: dict[str, Any], kind: str) -> int:
    """Requests that carried events so far, per SIEM stand-in."""
    if kind == "azure_monitor":
        return len(peers["ingestion"].call_sizes)
    if kind == "elasticsearch":
        return len(peers["elastic"].bulk_sizes)
    return len(peers["datadog"].requests)


@contextlib.asynccontextmanager
async def receivers(tmp: Path, kinds: set[str]) -> AsyncIterator[dict[str, Any]]:
    async with HttpReceiver() as http, HecReceiver(token="bench") as hec, siem_receivers(tmp, kinds) as siem:
        rsyslog = Rsyslog(tmp / "rsyslog") if RSYSLOGD and "syslog" in kinds else None
        moto = moto_server() if kinds & set(AWS_CALLS) else None
        if rsyslog:
            rsyslog.start()
        if moto:
            moto.start()
        try:
            yield {"http": http, "hec": hec, "rsyslog": rsyslog, "moto": moto, "siem": siem}
        finally:
            if rsyslog:
                rsyslog.stop()
            if moto:
                moto.stop()


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
    moto = peers["moto"]
    if moto is not None:
        bucket = "bench-audit"
        moto.client("s3").create_bucket(Bucket=bucket)
        aws = {"region": "us-east-1", "endpoint_url": moto.endpoint_url}
        s3 = {**aws, "type": "s3", "bucket": bucket, "force_path_style": True}
        logs = {**aws, "type": "cloudwatch_logs", "log_group": "/bench/audit"}
        out += [
            ("s3 gzip (moto)", {**s3, "name": "a1"}),
            ("s3 plain (moto)", {**s3, "name": "a2", "compression": "none"}),
            ("cloudwatch_logs (moto)", {**logs, "name": "a3"}),
        ]
    return out + siem_cases(peers["siem"])


async def settled_count(rsyslog: Rsyslog) -> int:
    """rsyslog's output line count once it stops growing (it buffers and lags behind)."""
    last, stable = -1, 0
    while stable < 3:
        count = rsyslog.count()
        stable = stable + 1 if count == last else 0
        last = count
        await asyncio.sleep(0.2)
    return last


KINDS = ("file", "stdout", "http", "splunk_hec", "syslog", *AWS_CALLS, *SIEM)


async def bench(total: int, streams: int, repeat: int, kinds: set[str]) -> list[tuple[str, float]]:
    events = make_events(total, streams)
    sent = sum(len(b) for b in events.values())
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        async with receivers(tmp, kinds) as peers:
            rsyslog: Rsyslog | None = peers["rsyslog"]
            for label, config in cases(peers, tmp):
                if config["type"] not in kinds:
                    continue
                before = await settled_count(rsyslog) if rsyslog and config["type"] == "syslog" else 0
                sent_before = siem_requests(peers["siem"], config["type"]) if config["type"] in SIEM else 0
                rates = []
                calls = 0
                for _ in range(repeat):
                    with stdout_to_devnull() if config["type"] == "stdout" else contextlib.nullcontext():
                        rate, calls = await run(config, events, tmp / "state")
                        rates.append(rate)
                rate = statistics.median(rates)
                results.append((label, rate))
                note = ""
                if rsyslog and config["type"] == "syslog":
                    written = await settled_count(rsyslog) - before
                    note = f"  (rsyslog wrote {written:,} of {sent * repeat:,})"
                if config["type"] in AWS_CALLS:
                    what = " + ".join(AWS_CALLS[config["type"]])
                    note = f"  ({calls * 100_000 / sent:,.0f} {what} calls per 100,000 events)"
                if config["type"] in SIEM:
                    requests = siem_requests(peers["siem"], config["type"]) - sent_before
                    note = f"  ({requests * 100_000 / (sent * repeat):,.0f} requests per 100,000 events)"
                spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
                print(f"{label:22s} {rate:>9,.0f} events/s  [{spread}]{note}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs per sink; the median is reported")
    parser.add_argument("--only", help=f"comma-separated sink types (default: all of {', '.join(KINDS)})")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    kinds = set(args.only.split(",")) if args.only else set(KINDS)
    if kinds - set(KINDS):
        parser.error(f"unknown sink type(s): {', '.join(sorted(kinds - set(KINDS)))}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    shape = f"{args.events:,} events, {args.streams} streams at once, batches of {BATCH}"
    lines = [f"{shape}, median of {args.repeat} runs"]
    print(lines[0])
    with contextlib.redirect_stdout(Lines(sys.stdout, lines)):
        results = asyncio.run(bench(args.events, args.streams, args.repeat, kinds))
    lines.append(json.dumps({label: round(rate) for label, rate in results}))
    print(lines[-1])
    if args.write:
        name = "sinks" if not args.only else "sinks-" + "-".join(k for k in KINDS if k in kinds)
        replace_block(name, ["```", *lines, "```"], command_line("bench.bench_sinks", argv))


class Lines(io.TextIOBase):
    """Print as usual and keep each printed line for BENCHMARKS.md."""

    def __init__(self, target: Any, lines: list[str]) -> None:
        self.target = target
        self.lines = lines

    def write(self, text: str) -> int:
        self.lines.extend(line for line in text.splitlines() if line)
        return int(self.target.write(text))

    def flush(self) -> None:
        self.target.flush()


if __name__ == "__main__":
    main()
