"""API economy: StrongDM calls spent per record delivered, backfills and live polling.

    .venv/bin/python -m bench.bench_api [--only backfill,live,late,sdk] [--live-minutes 10] [--write]

Every scenario runs ``auditstream`` as its own process against the emulator (on a thread of
this process) and reads the emulator's own count of the calls it answered:

* **backfill**: a 13-month backfill of a sparse organisation (28 streams, ~10,000 records)
  and an 8-day dense one (~92,000), with pages capped at 50 and at 500, results newest-first
  and unordered. Calls against the minimum (each stream's records / page size, rounded up,
  one call for an empty stream); target: at most 1.3 times the minimum plus 2 per stream.
* **live**: ``auditstream run`` (shipped defaults: poll 30 s, tail 10 s, overlap 5 m) for
  ``--live-minutes`` at 300 and 1,000 records/s, the same page caps and orders. The design
  lists every record twice (the head, then the sweep once its ground is ``overlap`` old) plus
  what the head lists again because it was less than ``tail`` old when listed: records
  listed per record delivered (target <= 3), calls a minute against a minimum that counts
  those two listings (every stream listed twice in full pages, at least one call per stream
  for each poll and each sweep; target <= 1.2x), the worst lag once warmed up, and the bytes
  the process wrote to disk per delivered record (the checkpoint: the sink writes to
  /dev/null; target < 200). At 1,000 records/s with pages of 50 the emulator refuses more
  than 5,000 calls a minute, and ``calls_per_minute = 5000`` gives this daemon the whole key
  (the default half would not hold that volume); target: lag under poll interval + 10 s.
* **late**: live polling for ``--late-minutes`` with 5 % of the activities visible up to 2
  minutes after their time: how long after their time records visible more than ``tail``
  late are delivered (by the sweep, about ``overlap`` after their time), beside the others.
* **sdk**: an 8-day backfill of all 28 streams (~92,000 records) with 100 ms per API call,
  pages capped at 137 and 5,000 calls a minute: ``auditstream backfill`` (``--repeats``
  runs) against the official SDK listing the streams one after the other (``--sdk-repeats``);
  target: 10 times faster, peak RSS under 150 MB, calls within the backfill target. Each
  run's CPU time and the time its main thread waited for a CPU are reported beside the wall
  time: on a shared 2-core box the wall time of a CPU-bound run follows the other sessions'
  load, its CPU time does not.

The 28 streams are activities, queries and the 26 history streams, as when these scenarios
were first measured: managed_secret_logs, a default stream since, is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from auditstream.emulator import Emulator, EmulatorOptions, Order, running_emulator
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES
from bench.bench_vs_sdk import Launcher, run_measured
from bench.machine import command_line, replace_block

# The scenarios' 28 streams (activities, queries, 26 *_history): managed_secret_logs, a default
# stream since, is left out so that the figures stay comparable with the earlier ones.
STREAMS = [name for name in DEFAULT_STREAM_NAMES if name != "managed_secret_logs"]
DAY = 86_400.0
PAGE_CAPS = (50, 500)
ORDERS = (Order.NEWEST, Order.UNORDERED)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(emu: Emulator, work: Path, page_size: int, *, sink: str, extra: str = "") -> str:
    return f"""\
[source]
endpoint = "{emu.address}"
access_key = "{emu.options.access_key}"
secret_key = "{emu.options.secret_key}"
insecure = true
page_size = {page_size}
{extra}

[streams]
start_at = "now"
include = [{", ".join(f'"{name}"' for name in STREAMS)}]

[checkpoint]
path = "{work / "state" / "checkpoints.db"}"

{sink}

[logging]
format = "json"
"""


def file_sink(path: Path) -> str:
    return f'[[sinks]]\ntype = "file"\nname = "out"\npath = "{path}"\nfsync = false\n'


def minimum_calls(counts: Sequence[int], page_size: int) -> int:
    return sum(max(1, math.ceil(n / page_size)) for n in counts)


# -- backfill ------------------------------------------------------------------------------------


@dataclass
class BackfillRow:
    scenario: str
    page: int
    order: str
    records: int
    calls: int
    minimum: int
    listed: int
    wall: float
    cpu: float

    @property
    def allowed(self) -> float:
        return 1.3 * self.minimum + 2 * len(STREAMS)


def run_backfill(
    launcher: Launcher, scenario: str, records: int, span_days: float, page: int, order: Order
) -> BackfillRow:
    options = EmulatorOptions(
        seed=21,
        streams=tuple(STREAMS),
        records=records,
        spread_seconds=span_days * DAY,
        activities_default_window_seconds=span_days * DAY,
        max_page_size=page,
        order=order,
    )
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=span_days + 1)
    with running_emulator(options, timeout=600) as emu, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "config.toml"
        out = work / "out.jsonl"
        config.write_text(config_text(emu, work, page, sink=file_sink(out), extra="calls_per_minute = 5000"))
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        counts = [len(emu.truth(stream)) for stream in STREAMS]
        before = emu.stats.requests_total.copy(), emu.stats.records_served.copy()
        argv = [
            sys.executable, "-m", "auditstream.cli", "backfill", "--config", str(config),
            "--from", since.isoformat(), "--to", until.isoformat(), "--streams", ",".join(STREAMS),
        ]  # fmt: skip
        result = run_measured(launcher, scenario, argv, out, work / "daemon.err")
        if result.exit_code != 0 or result.records < sum(counts):
            raise SystemExit(
                f"{scenario}: exit {result.exit_code}, {result.records} of {sum(counts)} records"
            )
        calls = sum(emu.stats.requests_total.values()) - sum(before[0].values())
        listed = sum(emu.stats.records_served.values()) - sum(before[1].values())
    return BackfillRow(
        scenario,
        page,
        order.value,
        sum(counts),
        calls,
        minimum_calls(counts, page),
        listed,
        result.wall,
        result.cpu,
    )


def backfill_table(rows: list[BackfillRow]) -> list[str]:
    lines = [
        "| scenario | page cap | order | records | calls | minimum | calls / minimum "
        "| target (1.3 x min + 56) | listed per delivered | wall s | CPU s |",
        "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        verdict = "PASS" if r.calls <= r.allowed else "MISS"
        lines.append(
            f"| {r.scenario} | {r.page} | {r.order} | {r.records:,} | {r.calls:,} | {r.minimum:,} "
            f"| {r.calls / r.minimum:.2f} | {verdict} ({r.allowed:,.0f}) | {r.listed / r.records:.2f} "
            f"| {r.wall:,.1f} | {r.cpu:,.1f} |"
        )
    return lines


# -- live ------------------------------------------------------------------------------------------

POLL_SECONDS = 30.0  # the shipped [streams] poll_interval, tail and overlap
TAIL_SECONDS = 10.0
OVERLAP_SECONDS = 300.0
SWEEP_SECONDS = max(POLL_SECONDS, min(OVERLAP_SECONDS / 4, 60.0))  # engine.window.WindowPolicy


@dataclass
class LiveRow:
    rate: int
    page: int
    order: str
    minutes: float
    delivered: int
    listed: int
    calls: int
    minimum: int
    worst_lag: float
    written: int

    @property
    def listed_per_delivered(self) -> float:
        return self.listed / max(self.delivered, 1)


def live_minimum(new: Sequence[int], page: int, seconds: float) -> int:
    """Calls the design cannot do without: every stream listed twice (the head, then the
    sweep once its ground is ``overlap`` old), each time in full pages, and at least one
    call per stream for each poll of the head and each sweep."""
    polls, sweeps = math.ceil(seconds / POLL_SECONDS), math.ceil(seconds / SWEEP_SECONDS)
    return sum(max(polls, math.ceil(n / page)) + max(sweeps, math.ceil(n / page)) for n in new)


def scrape(url: str) -> dict[tuple[str, str], float]:
    """``{(name, labels): value}`` of one /metrics scrape."""
    samples: dict[tuple[str, str], float] = {}
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            match = re.match(r"^([a-z_]+)(\{[^}]*\})? ([-0-9.e+]+)$", line)
            if match:
                samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return samples


def total(samples: dict[tuple[str, str], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def daemon(
    config: Path, err: Path, stdout: int | None = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    with err.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditstream.cli", "run", "--config", str(config)],
            stdout=stdout,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)


def wait_for_metrics(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            scrape(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def live_config(emu: Emulator, work: Path, page: int, port: int, *, limited: bool) -> Path:
    sink = '[[sinks]]\ntype = "stdout"\nname = "out"\n'
    extra = "calls_per_minute = 5000" if limited else ""
    config = work / "config.toml"
    config.write_text(
        config_text(emu, work, page, sink=sink, extra=extra) + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    )
    return config


WARMUP_SECONDS = OVERLAP_SECONDS + SWEEP_SECONDS + 2 * POLL_SECONDS


def run_live(rate: int, page: int, order: Order, minutes: float, warmup: float = WARMUP_SECONDS) -> LiveRow:
    limited = rate >= 1000 and page == 50
    options = EmulatorOptions(
        seed=22,
        streams=tuple(STREAMS),
        records=0,
        history_records=0,
        live=float(rate),
        max_page_size=page,
        order=order,
        rate_limit=5000 if limited else None,
    )
    with running_emulator(options, timeout=600) as emu, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        config = live_config(emu, work, page, port, limited=limited)  # stdout: /dev/null, no disk bytes
        url = f"http://127.0.0.1:{port}/metrics"
        with daemon(config, work / "daemon.err") as proc:
            wait_for_metrics(url)
            # Steady state before measuring: the first sweeps come once the first ground is
            # overlap old (records listed before it count as delivered, not yet as swept).
            warm = time.monotonic() + warmup
            while time.monotonic() < warm:
                time.sleep(1)
            first = scrape(url)
            calls0 = sum(emu.stats.requests_total.values())
            written0 = write_bytes(proc.pid)
            per_stream0 = {s: len(emu.truth(s)) for s in STREAMS}
            started = time.monotonic()
            worst = 0.0
            while time.monotonic() - started < minutes * 60:
                time.sleep(5)
                lags = [v for (n, _), v in scrape(url).items() if n == "auditstream_checkpoint_lag_seconds"]
                worst = max([worst, *lags])
            last = scrape(url)
            calls = sum(emu.stats.requests_total.values()) - calls0
            written = write_bytes(proc.pid) - written0
            elapsed = time.monotonic() - started
            new = [len(emu.truth(s)) - per_stream0[s] for s in STREAMS]
            delivered = int(
                total(last, "auditstream_records_delivered_total")
                - total(first, "auditstream_records_delivered_total")
            )
            listed = int(
                total(last, "auditstream_records_fetched_total")
                - total(first, "auditstream_records_fetched_total")
            )
    minimum = live_minimum(new, page, elapsed)
    return LiveRow(rate, page, order.value, elapsed / 60, delivered, listed, calls, minimum, worst, written)


def live_table(rows: list[LiveRow]) -> list[str]:
    lines = [
        "| records/s | page cap | order | minutes | delivered | listed per delivered (<= 3) "
        "| calls/min | minimum/min (two listings) | calls / minimum (<= 1.2) | worst lag s "
        "| disk bytes per record (< 200) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_min = r.calls / r.minutes
        minimum = r.minimum / r.minutes
        ratio = r.calls / max(r.minimum, 1)
        lines.append(
            f"| {r.rate:,} | {r.page} | {r.order} | {r.minutes:.1f} | {r.delivered:,} "
            f"| {r.listed_per_delivered:.2f} {'PASS' if r.listed_per_delivered <= 3 else 'MISS'} "
            f"| {per_min:,.0f} | {minimum:,.0f} | {ratio:.2f} {'PASS' if ratio <= 1.2 else 'MISS'} "
            f"| {r.worst_lag:,.1f} | {r.written / max(r.delivered, 1):,.0f} "
            f"{'PASS' if r.written / max(r.delivered, 1) < 200 else 'MISS'} |"
        )
    return lines


# -- records later than the tail -------------------------------------------------------------------


@dataclass
class LateRow:
    minutes: float
    late: int  # records that became visible more than ``tail`` after their time, old enough to count
    visible_lag: list[float]  # per such record: seconds from its time to when it became visible
    delay: list[float]  # per such record: seconds from its time to its delivery
    missing: int  # such records never delivered
    on_time_delay: list[float]  # the same for records visible at once


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_late(minutes: float, rate: int = 300, page: int = 500) -> LateRow:
    """Live polling (shipped defaults) with 5 % of the activities visible up to 2 minutes after
    their time: when each record became visible (the emulator's store, watched every 0.5 s)
    and when its line came out of the daemon (stdout, read here), for those visible more than
    ``tail`` late and for the rest."""
    options = EmulatorOptions(
        seed=24,
        streams=tuple(STREAMS),
        records=0,
        history_records=0,
        live=float(rate),
        max_page_size=page,
        order=Order.NEWEST,
        late_rate=0.05,
        late_max_seconds=120.0,
    )
    arrived: dict[str, float] = {}
    seen: dict[str, float] = {}
    with running_emulator(options, timeout=600) as emu, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        config = live_config(emu, work, page, port, limited=False)
        store = emu.store.stream("activities")

        def watch(stop: threading.Event) -> None:
            while not stop.wait(0.5):
                emu.store.publish_due()
                with emu.store.lock:
                    keys = list(store.keys)
                now = time.time()
                for key in keys:
                    seen.setdefault(key, now)

        with daemon(config, work / "daemon.err", stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            out = proc.stdout

            def read() -> None:
                for line in out:
                    if b'"activities"' in line[:40]:
                        arrived.setdefault(orjson.loads(line)["id"], time.time())

            stop = threading.Event()
            threads = [
                threading.Thread(target=read, daemon=True),
                threading.Thread(target=watch, args=(stop,)),
            ]
            for thread in threads:
                thread.start()
            started = time.time()
            time.sleep(minutes * 60)
            stop.set()
            times = dict(emu.truth("activities"))
    # Late records need overlap + a sweep period + a poll to come out: only those whose time
    # is that far before the end count, and only after the first minute (start-up).
    horizon = started + minutes * 60 - OVERLAP_SECONDS - SWEEP_SECONDS - 2 * POLL_SECONDS
    late_lag: list[float] = []
    late_delay: list[float] = []
    on_time: list[float] = []
    missing = 0
    for key, time_ns in times.items():
        at = time_ns / 1e9
        if key not in seen or not started + 60 <= at <= horizon:
            continue
        lag = seen[key] - at
        delivered = arrived.get(key)
        if lag > TAIL_SECONDS + 1:  # the watch sees it within 0.5 s of becoming visible
            late_lag.append(lag)
            if delivered is None:
                missing += 1
            else:
                late_delay.append(delivered - at)
        elif lag < 1 and delivered is not None:
            on_time.append(delivered - at)
    return LateRow(minutes, len(late_lag), late_lag, late_delay, missing, on_time)


def late_table(row: LateRow) -> list[str]:
    def spread(values: Sequence[float]) -> str:
        return (
            f"{_pct(values, 0.5):,.0f} / {_pct(values, 0.9):,.0f} / {max(values, default=float('nan')):,.0f}"
        )

    return [
        f"Live polling for {row.minutes:.0f} minutes at 300 records/s, pages of 500, shipped defaults "
        f"(poll {POLL_SECONDS:.0f} s, tail {TAIL_SECONDS:.0f} s, overlap {OVERLAP_SECONDS / 60:.0f} m, "
        f"sweeps every {SWEEP_SECONDS:.0f} s); 5 % of the activities visible up to 2 minutes after "
        "their time. Seconds from a record's time, p50 / p90 / max:",
        "",
        "| activities | records | visible after | delivered after | not delivered |",
        "|---|---:|---:|---:|---:|",
        f"| visible at once | {len(row.on_time_delay):,} | 0 | {spread(row.on_time_delay)} | - |",
        f"| visible more than tail late | {row.late:,} | {spread(row.visible_lag)} | {spread(row.delay)} "
        f"| {row.missing} |",
    ]


# -- against the SDK -------------------------------------------------------------------------------


@dataclass
class SdkRun:
    """One contender's run of the SDK scenario."""

    records: int
    calls: int
    wall: float
    cpu: float
    peak_rss: int  # bytes
    cpu_wait: float  # seconds its main thread waited for a CPU
    warnings: int = 0  # log lines at warning or error (retries, rate limits): why a run was slow


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _spread(values: Sequence[float], fmt: str = ",.1f") -> str:
    """The median, and the range when there is more than one run."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(_median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def run_vs_sdk(launcher: Launcher, repeats: int = 1, sdk_repeats: int = 1) -> list[str]:
    """The 8-day backfill of the 28 streams: ``repeats`` runs of auditstream (interleaved
    with the SDK loop's ``sdk_repeats``) against one emulator. Wall times on this shared
    box vary with the other sessions' load; CPU time and calls do not."""
    options = EmulatorOptions(
        seed=23, streams=tuple(STREAMS), records=20_000, latency_ms=100, max_page_size=137, rate_limit=5000
    )
    ours: list[SdkRun] = []
    sdk: list[SdkRun] = []
    with running_emulator(options, timeout=600) as emu:
        expected = [len(emu.truth(s)) for s in STREAMS]
        for run in range(max(repeats, sdk_repeats)):
            if run < repeats:
                ours.append(_our_backfill(launcher, emu))
            if run < sdk_repeats:
                sdk.append(_sdk_loop(launcher, emu))
            time.sleep(12)  # 740 calls a run against 5,000 a minute: the next run starts with a full bucket
    minimum = minimum_calls(expected, 137)
    speedups = [s.wall / o.wall for o in ours for s in sdk] if ours and sdk else [0.0]
    lines = [
        f"28 streams ({', '.join(STREAMS[:2])} and the 26 history streams), {sum(expected):,} records; "
        f"minimum {minimum:,} calls (each stream's records / 137, rounded up). "
        f"auditstream: {len(ours)} run(s), the SDK loop: {len(sdk)}; median [range].",
        "",
        "| contender | records | calls | calls / minimum | wall s | CPU s | CPU µs/record "
        "| waited for a CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    contenders = (
        ("auditstream backfill (shipped defaults)", ours),
        ("official SDK, one stream after the other", sdk),
    )
    for name, runs in contenders:
        lines.append(
            f"| {name} | {_spread([r.records for r in runs], ',.0f')} "
            f"| {_spread([r.calls for r in runs], ',.0f')} "
            f"| {_spread([r.calls / minimum for r in runs], '.2f')} | {_spread([r.wall for r in runs])} "
            f"| {_spread([r.cpu for r in runs])} | {_spread([r.cpu / r.records * 1e6 for r in runs], '.1f')} "
            f"| {_spread([r.cpu_wait for r in runs])} "
            f"| {_spread([r.peak_rss / 2**20 for r in runs], '.0f')} |"
        )
    target = _median(speedups) >= 10 and all(o.peak_rss < 150 * 2**20 for o in ours)
    each = "; ".join(
        f"{r.wall:.1f} s ({r.cpu:.1f} CPU s, {r.cpu_wait:.1f} s waiting"
        + (f", {r.warnings} log warnings" if r.warnings else "")
        + ")"
        for r in ours
    )
    lines += [
        "",
        f"auditstream's runs in order, wall (CPU, waiting for a CPU): {each}.",
        "",
        f"auditstream {_spread(speedups)}x the SDK loop's wall time (every pair of runs; target 10x "
        f"and peak RSS < 150 MB: {'PASS' if target else 'MISS'}); calls target 1.3 x minimum + 2 per "
        f"stream = {1.3 * minimum + 2 * len(STREAMS):,.0f}.",
    ]
    return lines


def _our_backfill(launcher: Launcher, emu: Emulator) -> SdkRun:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).replace(microsecond=0)
        until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        out = work / "out.jsonl"
        config = work / "config.toml"
        config.write_text(config_text(emu, work, 137, sink=file_sink(out)))
        argv = [
            sys.executable, "-m", "auditstream.cli", "backfill", "--config", str(config),
            "--from", since.isoformat(), "--to", until.isoformat(), "--streams", ",".join(STREAMS),
        ]  # fmt: skip
        calls0 = sum(emu.stats.requests_total.values())
        result = run_measured(launcher, "auditstream", argv, out, work / "daemon.err")
        calls = sum(emu.stats.requests_total.values()) - calls0
        if result.exit_code != 0:
            raise SystemExit(f"auditstream backfill: exit {result.exit_code}")
        log = (work / "daemon.err").read_text(errors="replace")
        warnings = log.count('"level": "warning"') + log.count('"level": "error"')
    return SdkRun(result.records, calls, result.wall, result.cpu, result.peak_rss, result.cpu_wait, warnings)


def _sdk_loop(launcher: Launcher, emu: Emulator) -> SdkRun:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).replace(microsecond=0)
        until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        out = work / "sdk.jsonl"
        argv = [
            sys.executable, "-m", "bench.bench_vs_sdk", "sdk-loop", "--address", emu.address,
            "--streams", ",".join(STREAMS), "--since", since.isoformat(), "--until", until.isoformat(),
            "--out", str(out),
        ]  # fmt: skip
        env = {"BENCH_SDK_ACCESS_KEY": emu.options.access_key, "BENCH_SDK_SECRET_KEY": emu.options.secret_key}
        calls0 = sum(emu.stats.requests_total.values())
        result = run_measured(launcher, "sdk", argv, out, work / "sdk.err", env)
        calls = sum(emu.stats.requests_total.values()) - calls0
    return SdkRun(result.records, calls, result.wall, result.cpu, result.peak_rss, result.cpu_wait)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="backfill,live,late,sdk")
    parser.add_argument("--live-minutes", type=float, default=10.0)
    parser.add_argument("--live-rates", default="300,1000")
    parser.add_argument("--live-pages", default=",".join(str(p) for p in PAGE_CAPS))
    parser.add_argument("--live-orders", default=",".join(o.value for o in ORDERS))
    parser.add_argument("--late-minutes", type=float, default=12.0)
    parser.add_argument(
        "--live-warmup", type=float, default=WARMUP_SECONDS, help="seconds before measuring (first sweeps)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="auditstream runs of the sdk part")
    parser.add_argument("--sdk-repeats", type=int, default=1, help="SDK loop runs of the sdk part (75 s)")
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md")
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parser.parse_args(args)
    parts = set(opts.only.split(","))
    lines: list[str] = []
    launcher = Launcher()
    try:
        if "backfill" in parts:
            rows = []
            for scenario, records, days in (
                ("13 months, sparse", 2_170, 395.0),
                ("8 days, dense", 20_000, 8.0),
            ):
                for page in PAGE_CAPS:
                    for order in ORDERS:
                        print(f"[backfill] {scenario}, page {page}, {order.value}...", file=sys.stderr)
                        rows.append(run_backfill(launcher, scenario, records, days, page, order))
            lines += ["#### Backfill", "", *backfill_table(rows), ""]
        if "late" in parts:
            print(f"[late] {opts.late_minutes:g} minutes...", file=sys.stderr)
            lines += ["#### Records later than the tail", "", *late_table(run_late(opts.late_minutes)), ""]
        if "live" in parts:
            live_rows = []
            for rate in (int(r) for r in opts.live_rates.split(",")):
                for page in (int(p) for p in opts.live_pages.split(",")):
                    for order in (Order(o) for o in opts.live_orders.split(",")):
                        print(f"[live] {rate}/s, page {page}, {order.value}...", file=sys.stderr)
                        live_rows.append(run_live(rate, page, order, opts.live_minutes, opts.live_warmup))
            lines += ["#### Live", "", *live_table(live_rows), ""]
        if "sdk" in parts:
            print("[sdk] 8 days, 100 ms per call...", file=sys.stderr)
            lines += [
                "#### Against the official SDK, 100 ms per call",
                "",
                *run_vs_sdk(launcher, opts.repeats, opts.sdk_repeats),
                "",
            ]
    finally:
        launcher.close()
    print("\n".join(lines))
    if opts.write:
        replace_block("api", lines, command_line("bench.bench_api", args))


if __name__ == "__main__":
    main()
