"""auditstream backfill versus a plain loop over the official SDK, on one emulator.

    .venv/bin/python -m bench.bench_vs_sdk [--records 1000000] [--mixed-records 100000] [--write]

One emulator (in this process, on a background thread) is preloaded with ``--records``
activities; on it, one after the other, each contender runs as its own process and exports
everything from 8 days ago to now into a file:

* ``auditstream backfill`` to the file sink, JSON then CEF, with the shipped defaults
  (page size 500, slice 1h, overlap 5m, fsync of every batch);
* the SDK loop: ``client.activities.list("after:? before:?", after, before)`` with
  ``page_limit`` 500 (the daemon's page size; the SDK's default is the server's 50),
  writing ``json.dumps`` of every field of every record (models read through their
  ``__slots__``, datetimes as ISO 8601), one line per record, no fsync.

A second, mixed run does the same over all 28 streams (``--mixed-records`` activities and
queries, a tenth of that per history stream; the SDK loop lists the 28 services in turn).
A third run (``--latency-records`` activities) adds ``--latency-ms`` to every API call, as a
remote API has: there the SDK loop waits for every page in turn, while the daemon lists
``[engine] slices_ahead`` slices concurrently; without latency both are CPU-bound.

Measured per contender: lines written (against the emulator's count of records in the
period), wall time, records/s, CPU seconds (user + system of that process, from ``wait4``),
peak RSS (``ru_maxrss``; contenders are started from a small launcher process, as the peak
survives fork + exec) and RSS sampled from ``/proc/PID/status`` as the output grows, to read
memory at 100k, 250k, 500k and 1M records. ``--write`` puts the tables into BENCHMARKS.md.

The emulator's serving thread shares the machine: on 2 cores the client process gets one
core and the emulator most of the other. Both contenders see the same emulator.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditstream.emulator import Emulator, EmulatorOptions, running_emulator
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES
from bench.machine import command_line, replace_block

PAGE_SIZE = 500
SAMPLE_SECONDS = 0.25
RSS_MARKS = (100_000, 250_000, 500_000, 1_000_000)


# -- the SDK loop (runs in its own process: ``python -m bench.bench_vs_sdk sdk-loop ...``) ------


def sdk_loop(
    address: str, access_key: str, secret_key: str, streams: list[str], since: str, until: str, out: str
) -> int:
    import strongdm

    client = strongdm.Client(access_key, secret_key, host=address, insecure=True, page_limit=PAGE_SIZE)
    after, before = dt.datetime.fromisoformat(since), dt.datetime.fromisoformat(until)

    def every_field(value: object) -> object:
        """What json.dumps cannot serialize itself: the SDK's models, times, tag maps."""
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        if isinstance(value, Mapping):
            return dict(value)
        slots = getattr(type(value), "__slots__", None)
        if slots is None:
            return str(value)
        return {name: getattr(value, name) for name in slots}

    written = 0
    with open(out, "w") as handle:
        for stream in streams:
            for record in getattr(client, stream).list("after:? before:?", after, before):
                handle.write(json.dumps(record, default=every_field) + "\n")
                written += 1
    return written


# -- running and measuring one contender --------------------------------------------------------


@dataclass
class Result:
    name: str
    records: int
    wall: float
    cpu: float
    peak_rss: int  # bytes
    samples: list[tuple[int, int]] = field(default_factory=list)  # (records so far, RSS bytes)
    exit_code: int = 0
    # Seconds its main thread was ready to run and waited for a CPU (other processes had
    # them), as of the last sample (/proc/PID/schedstat): on a shared box, what separates
    # a slow run from a loaded one.
    cpu_wait: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.wall if self.wall else 0.0

    def rss_at(self, records: int) -> int | None:
        """RSS when the output first held ``records`` records (None if it never did). A
        process that wrote its last lines and exited between two samples is read at its
        last sample."""
        found = next((rss for count, rss in self.samples if count >= records), None)
        if found is None and self.samples and self.records >= records:
            return self.samples[-1][1]
        return found


def _vm_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_wait(pid: int) -> float | None:
    """Seconds the process's main thread has waited on a run queue."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _line_count(path: Path, state: dict[str, int]) -> int:
    """Lines in a growing file, counted incrementally (only the new bytes are read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(state.get("offset", 0))
            chunk = handle.read()
    except FileNotFoundError:
        return 0
    state["offset"] = state.get("offset", 0) + len(chunk)
    state["lines"] = state.get("lines", 0) + chunk.count(b"\n")
    return state["lines"]


_LAUNCHER = r"""
import json, os, subprocess, sys
for line in sys.stdin:
    job = json.loads(line)
    with open(job["stderr"], "wb") as err:
        proc = subprocess.Popen(job["argv"], stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env={**os.environ, **job["env"]})
    print(json.dumps({"pid": proc.pid}), flush=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"exit": proc.returncode, "cpu": usage.ru_utime + usage.ru_stime,
                      "maxrss": usage.ru_maxrss * 1024}), flush=True)
"""


class Launcher:
    """Starts the contenders from a small process started before the emulator is built.

    ``ru_maxrss`` survives ``fork`` + ``exec``: a child forked from this process (which holds
    the emulator's data set) would report our RSS as its peak. Forked from a ~10 MB launcher,
    the figure is the contender's own.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def start(self, argv: list[str], stderr: Path, env: dict[str, str]) -> int:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"argv": argv, "stderr": str(stderr), "env": env}) + "\n")
        self._proc.stdin.flush()
        return int(json.loads(self._proc.stdout.readline())["pid"])

    def wait(self) -> dict[str, float]:
        assert self._proc.stdout is not None
        return dict(json.loads(self._proc.stdout.readline()))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(10)


def run_measured(
    launcher: Launcher, name: str, argv: list[str], out: Path, log: Path, env: dict[str, str] | None = None
) -> Result:
    """Run ``argv`` to completion; sample its RSS against the lines in ``out``."""
    samples: list[tuple[int, int]] = []
    counter: dict[str, int] = {}
    started = time.monotonic()
    pid = launcher.start(argv, log, env or {})
    done = threading.Event()
    waited = [0.0]

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            rss = _vm_rss(pid)
            if rss is not None:
                samples.append((_line_count(out, counter), rss))
            wait = _cpu_wait(pid)
            if wait is not None:
                waited[0] = wait

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcome = launcher.wait()
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    return Result(
        name=name,
        records=_line_count(out, counter),
        wall=wall,
        cpu=float(outcome["cpu"]),
        peak_rss=int(outcome["maxrss"]),
        samples=samples,
        exit_code=int(outcome["exit"]),
        cpu_wait=waited[0],
    )


def daemon_config(emu: Emulator, workdir: Path, fmt: str, streams: str = "") -> Path:
    """The shipped defaults, except where the API is, where state and output go, no metrics,
    and any ``[streams]`` lines given."""
    text = f"""\
[source]
endpoint = "{emu.address}"
access_key = "{emu.options.access_key}"
secret_key = "{emu.options.secret_key}"
insecure = true

[streams]
{streams}

[checkpoint]
path = "{workdir / f"state-{fmt}" / "checkpoints.db"}"

[[sinks]]
type = "file"
name = "out"
format = "{fmt}"
path = "{workdir / f"out-{fmt}.log"}"

[metrics]
listen = ""

[logging]
format = "json"
"""
    path = workdir / f"config-{fmt}.toml"
    path.write_text(text)
    return path


def contenders(
    launcher: Launcher,
    emu: Emulator,
    workdir: Path,
    streams: list[str],
    since: dt.datetime,
    until: dt.datetime,
) -> list[Result]:
    results = []
    for fmt in ("json", "cef"):
        config = daemon_config(emu, workdir, fmt)
        argv = [
            sys.executable, "-m", "auditstream.cli", "backfill", "--config", str(config),
            "--from", since.isoformat(), "--to", until.isoformat(), "--streams", ",".join(streams),
        ]  # fmt: skip
        out = workdir / f"out-{fmt}.log"
        name = f"auditstream backfill, file sink, {fmt.upper()}"
        results.append(run_measured(launcher, name, argv, out, workdir / f"daemon-{fmt}.err"))
    out = workdir / "out-sdk.jsonl"
    argv = [
        sys.executable, "-m", "bench.bench_vs_sdk", "sdk-loop", "--address", emu.address,
        "--streams", ",".join(streams), "--since", since.isoformat(), "--until", until.isoformat(),
        "--out", str(out),
    ]  # fmt: skip
    env = {"BENCH_SDK_ACCESS_KEY": emu.options.access_key, "BENCH_SDK_SECRET_KEY": emu.options.secret_key}
    name = "SDK loop, json.dumps of every field"
    results.append(run_measured(launcher, name, argv, out, workdir / "sdk.err", env))
    return results


def expected_records(emu: Emulator, streams: Sequence[str]) -> int:
    return sum(len(emu.truth(stream)) for stream in streams)


# -- reporting ---------------------------------------------------------------------------------


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.0f}"


def table(results: list[Result], expected: int) -> list[str]:
    sdk = results[-1]
    lines = [
        "| contender | records | wall s | records/s | vs SDK loop | CPU s | CPU µs/record | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r.rate / sdk.rate if sdk.rate else 0.0
        lines.append(
            f"| {r.name} | {r.records:,} | {r.wall:,.1f} | {r.rate:,.0f} | {ratio:.2f}x | {r.cpu:,.1f} "
            f"| {r.cpu / max(r.records, 1) * 1e6:,.1f} | {mb(r.peak_rss)} |"
        )
    lines.append("")
    lines.append(f"Ground truth: {expected:,} records in the emulator for the period.")
    return lines


def rss_table(results: list[Result]) -> list[str]:
    marks = [m for m in RSS_MARKS if any(r.records >= m for r in results)]
    lines = [
        "| contender | " + " | ".join(f"RSS at {m:,} MB" for m in marks) + " | peak MB |",
        "|---|" + "---:|" * (len(marks) + 1),
    ]
    for r in results:
        cells = " | ".join(mb(r.rss_at(m)) for m in marks)
        lines.append(f"| {r.name} | {cells} | {mb(r.peak_rss)} |")
    return lines


def measure(
    launcher: Launcher, records: int, streams: list[str], label: str, latency_ms: float = 0.0
) -> list[str]:
    options = EmulatorOptions(records=records, streams=tuple(streams), seed=11, latency_ms=latency_ms)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).replace(microsecond=0)
    print(f"[{label}] building the emulator ({records:,} records per main stream)...", file=sys.stderr)
    with running_emulator(options, timeout=600) as emu, tempfile.TemporaryDirectory() as tmp:
        # Every record is older than the emulator's start: both contenders export [since, until).
        until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        expected = expected_records(emu, streams)
        results = contenders(launcher, emu, Path(tmp), streams, since, until)
    failed = [r for r in results if r.exit_code != 0 or r.records != expected]
    lines = [f"#### {label}", "", *table(results, expected), "", *rss_table(results)]
    for r in failed:
        lines.append(f"\n**{r.name}: exit {r.exit_code}, {r.records:,} of {expected:,} records.**")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sdk-loop"]:
        sub = argparse.ArgumentParser()
        for flag in ("--address", "--streams", "--since", "--until", "--out"):
            sub.add_argument(flag, required=True)
        opts = sub.parse_args(args[1:])
        sdk_loop(
            opts.address,
            os.environ["BENCH_SDK_ACCESS_KEY"],
            os.environ["BENCH_SDK_SECRET_KEY"],
            opts.streams.split(","),
            opts.since,
            opts.until,
            opts.out,
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--mixed-records", type=int, default=100_000)
    parser.add_argument("--latency-records", type=int, default=500_000)
    parser.add_argument("--latency-ms", type=float, default=100.0, help="per API call, for that run")
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md")
    opts = parser.parse_args(args)
    launcher = Launcher()
    try:
        lines = measure(launcher, opts.records, ["activities"], f"{opts.records:,} activities")
        if opts.mixed_records:
            lines += [
                "",
                *measure(
                    launcher,
                    opts.mixed_records,
                    list(DEFAULT_STREAM_NAMES),
                    f"all {len(DEFAULT_STREAM_NAMES)} streams",
                ),
            ]
        if opts.latency_records and opts.latency_ms:
            label = f"{opts.latency_records:,} activities, {opts.latency_ms:g} ms per API call"
            lines += ["", *measure(launcher, opts.latency_records, ["activities"], label, opts.latency_ms)]
    finally:
        launcher.close()
    print("\n".join(lines))
    if opts.write:
        replace_block("sdk", lines, command_line("bench.bench_vs_sdk", args))


if __name__ == "__main__":
    main()
