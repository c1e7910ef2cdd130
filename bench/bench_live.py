"""Live latency and API efficiency of the daemon in steady state.

    .venv/bin/python -m bench.bench_live [--rate 50] [--seconds 180] [--configs default,tight] [--write]

The emulator (on a background thread of this process) produces ``--rate`` records per second
(45 % activities, 45 % queries, 10 % spread over the 26 history streams; no late records,
so a record becomes visible at its own time) and is preloaded with the same density of
records over the past ``overlap + 60 s``, so the daemon's overlapping re-reads are as full
from the first poll as they are after hours. ``auditstream run`` (its own process, all 28
streams, file sink with fsync, ``start_at = "now"``) delivers them; a thread tails the file
and notes when each record's line appears.

* **Latency**: line seen in the file minus the record's time (= when it became visible),
  for records that became visible after the first two poll cycles and early enough to be
  delivered before the end. Goal: p99 under ``poll_interval + 1 s``.
* **API efficiency**: List requests (pages) during the same interval per 1,000 new
  records, next to the minimum: every record read once in full pages (``1000 / page_size``),
  and what polling every stream once per cycle costs on top of that (one request per stream
  per poll interval, however few records it has).

Configurations: ``default`` is the shipped one (poll 30 s, no settle margin, overlap 5 m,
page 500); ``tight`` polls every 5 s; ``margin`` (not run unless named in ``--configs``) is
the default with a 10 s settle margin, the shipped default before it was set to 0, to show
what a margin costs. ``--write`` puts the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from auditstream.emulator import Emulator, EmulatorOptions, running_emulator
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES
from bench.bench_vs_sdk import daemon_config
from bench.machine import command_line, replace_block

NANOS = 1_000_000_000
PAGE_SIZE = 500
HISTORY_SHARE = 0.10


@dataclass(frozen=True)
class LiveConfig:
    name: str
    poll: float
    settle: float
    overlap: float = 300.0

    def streams_toml(self) -> str:
        return (
            f'poll_interval = "{self.poll:g}s"\nsettle = "{self.settle:g}s"\n'
            f'overlap = "{self.overlap:g}s"\nstart_at = "now"'
        )


CONFIGS = {
    "default": LiveConfig("shipped defaults", poll=30.0, settle=0.0),
    "tight": LiveConfig("tight", poll=5.0, settle=0.0),
    "margin": LiveConfig("10 s settle margin", poll=30.0, settle=10.0),
}


class Tailer(threading.Thread):
    """Notes the wall-clock time each (logType, id) first appears in a growing file."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[tuple[str, str], int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        offset, pending = 0, b""
        while not self.stop.wait(0.01):
            try:
                with self.path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            now = time.time_ns()
            offset += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                event = orjson.loads(line)
                self.seen.setdefault((event["logType"], event["id"]), now)


@dataclass
class LiveResult:
    config: LiveConfig
    rate: float
    measured_seconds: float
    latencies: list[float]  # seconds
    records: int  # new records in the measured interval
    requests: int  # List calls in the measured interval
    not_delivered: int

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def run_config(config: LiveConfig, rate: float, seconds: float) -> LiveResult:
    spread = config.overlap + 60.0
    options = EmulatorOptions(
        seed=5,
        records=int((1 - HISTORY_SHARE) / 2 * rate * spread),
        history_records=max(1, int(HISTORY_SHARE * rate * spread / 26)),
        spread_seconds=spread,
        live=rate,
        live_long_session_fraction=0.0,
    )
    with running_emulator(options) as emu, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config_file = daemon_config(emu, workdir, "json", config.streams_toml())
        tailer = Tailer(workdir / "out-json.log")
        tailer.start()
        log = (workdir / "daemon.err").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditstream.cli", "run", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        started = time.time_ns()
        # Measure from two poll cycles after the start (the backlog of the overlap is out)
        # until the end of the run; records visible later than end - (poll + settle + 2 s)
        # may legitimately still be on their way and are not counted for latency.
        begin = started + int(max(2 * config.poll + config.settle, 10) * NANOS)
        end = begin + int(seconds * NANOS)
        _sleep_until(begin, proc)
        requests_before = sum(emu.stats.requests_total.values())
        _sleep_until(end, proc)
        requests = sum(emu.stats.requests_total.values()) - requests_before
        latest = end - int((config.poll + config.settle + 2) * NANOS)
        _sleep_until(end + int(2 * NANOS), proc)  # let the last lines be seen
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        tailer.stop.set()
        tailer.join()
        log.close()
        if code != 0:
            raise RuntimeError(f"daemon exited {code}: {(workdir / 'daemon.err').read_text()[-2000:]}")
        latencies, records, not_delivered = _latencies(emu, tailer.seen, begin, end, latest)
    return LiveResult(config, rate, seconds, latencies, records, requests, not_delivered)


def _sleep_until(moment_ns: int, proc: subprocess.Popen[bytes]) -> None:
    """The benchmark's clock: wait until a wall-clock moment, failing if the daemon died."""
    while time.time_ns() < moment_ns:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited early with {proc.returncode}")
        time.sleep(min(0.5, (moment_ns - time.time_ns()) / NANOS))


def _latencies(
    emu: Emulator, seen: dict[tuple[str, str], int], begin: int, end: int, latest: int
) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    records = not_delivered = 0
    for stream in DEFAULT_STREAM_NAMES:
        for key, visible_ns in emu.filter_truth(stream):
            if not begin <= visible_ns < end:
                continue
            records += 1
            if visible_ns >= latest:
                continue
            arrived = seen.get((stream, key))
            if arrived is None:
                not_delivered += 1
            else:
                latencies.append((arrived - visible_ns) / NANOS)
    return latencies, records, not_delivered


def table(results: list[LiveResult]) -> list[str]:
    lines = [
        "| configuration | records/s | measured s | records timed | p50 s | p90 s | p99 s | max s "
        "| goal p99 < poll + 1 s | p99 - settle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        c = r.config
        p99 = r.percentile(99)
        verdict = "met" if p99 < c.poll + 1 else f"**missed** ({p99:.1f} > {c.poll + 1:g})"
        lines.append(
            f"| {c.name}: poll {c.poll:g} s, settle {c.settle:g} s, overlap {c.overlap:g} s | {r.rate:g} "
            f"| {r.measured_seconds:g} | {len(r.latencies):,} | {r.percentile(50):.2f} "
            f"| {r.percentile(90):.2f} | {p99:.2f} | {max(r.latencies):.2f} | {verdict} "
            f"| {p99 - c.settle:.2f} |"
        )
    lines += [
        "",
        "| configuration | new records | List calls | pages per 1,000 records | minimum: full pages "
        "| minimum at this poll interval | measured / minimum at this interval |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.config
        per_thousand = r.requests / max(r.records, 1) * 1000
        floor = 1000 / PAGE_SIZE
        polls = r.measured_seconds / c.poll * len(DEFAULT_STREAM_NAMES)
        at_interval = (polls + r.records / PAGE_SIZE) / max(r.records, 1) * 1000
        lines.append(
            f"| {c.name} | {r.records:,} | {r.requests:,} | {per_thousand:,.1f} | {floor:g} "
            f"| {at_interval:,.1f} | {per_thousand / at_interval:,.1f}x |"
        )
    missing = sum(r.not_delivered for r in results)
    if missing:
        lines.append(f"\n**{missing} records visible in time were not in the file at the end.**")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="live records per second (default 50)")
    parser.add_argument("--seconds", type=float, default=180.0, help="measured seconds per configuration")
    parser.add_argument("--configs", default="default,tight", help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    opts = parser.parse_args(args)
    results = []
    for name in opts.configs.split(","):
        print(f"[live] {name}: {opts.seconds:g} s measured...", file=sys.stderr, flush=True)
        results.append(run_config(CONFIGS[name], opts.rate, opts.seconds))
    lines = table(results)
    print("\n".join(lines))
    if opts.write:
        replace_block("live", lines, command_line("bench.bench_live", args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
