"""Every benchmark, one after the other: ``make bench`` (= ``.venv/bin/python -m bench``).

    .venv/bin/python -m bench [--quick] [--only NAME,...] [--write | --no-write]

Full runs write each benchmark's table into BENCHMARKS.md (a block per benchmark, stamped
with the machine and the exact command); ``--quick`` runs smaller sizes and only prints,
unless ``--write`` is given. Names: formats, sinks, emulator, longqueries, sdk, live, api,
decrypt, masking, replays, lake (the security_lake sink's Parquet), reliability (the reliability
suite, ``pytest -m reliability``, for its figures table).

Full sizes take about 20 minutes on 2 cores (the SDK comparison over 1,000,000 records
and 3 minutes of live traffic per live configuration are most of it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.machine import replace_block

ROOT = Path(__file__).resolve().parent.parent
SECRETS_TEST = "tests/ops/test_secrets.py"


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    full: list[str]
    quick: list[str]


BENCHES = [
    Bench("formats", "bench.bench_formats", [], ["--records", "1000", "--rounds", "2"]),
    Bench("sinks", "bench.bench_sinks", [], ["--events", "5000", "--repeat", "1"]),
    Bench("emulator", "bench.bench_emulator", [], ["--records", "100000"]),
    Bench("longqueries", "bench.bench_longqueries", [], ["--sessions", "10,100"]),
    Bench(
        "sdk",
        "bench.bench_vs_sdk",
        [],
        ["--records", "100000", "--mixed-records", "20000", "--latency-records", "20000"],
    ),
    Bench("live", "bench.bench_live", [], ["--seconds", "30", "--configs", "tight"]),
    Bench("api", "bench.bench_api", [], ["--only", "backfill,sdk"]),
    Bench("decrypt", "bench.bench_decrypt", [], ["--records", "300", "--rounds", "2", "--chunks", "50"]),
    Bench("masking", "bench.bench_masking", [], ["--records", "1000", "--rounds", "2"]),
    Bench("replays", "bench.bench_replays", [], ["--records", "1000", "--rounds", "1"]),
    Bench("lake", "bench.bench_security_lake", [], ["--records", "10000", "--rounds", "1"]),
]


class Tee(io.TextIOBase):
    """Print as usual and keep a copy."""

    def __init__(self, target: io.TextIOBase | object) -> None:
        self.target = target
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.target.write(text)  # type: ignore[attr-defined,no-any-return]

    def flush(self) -> None:
        self.target.flush()  # type: ignore[attr-defined]


def command(module: str, args: list[str]) -> str:
    return " ".join([".venv/bin/python", "-m", module, *args])


def run_bench(bench: Bench, args: list[str]) -> list[str]:
    import importlib

    main: Callable[[list[str]], None] = importlib.import_module(bench.module).main
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):  # type: ignore[type-var]
        main(args)
    text = tee.copy.getvalue().rstrip("\n")
    # Plain-text tables go in a code block; Markdown tables are kept as they are.
    if text.lstrip().startswith("|") or text.lstrip().startswith("#"):
        return text.splitlines()
    return ["```", *text.splitlines(), "```"]


def run_reliability() -> list[str]:
    """The reliability suite as ``make test`` runs it, then its figures as a table."""
    from tests.reliability.support import markdown_table

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "figures.json"
        env = {**os.environ, "AUDITSTREAM_RELIABILITY_REPORT": str(report)}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - started
        rows = json.loads(report.read_text()) if report.exists() else []
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "no output"
    print(proc.stdout[-3000:])
    # The secrets case belongs to the ops suite (tests/ops/test_secrets.py); its outcome
    # is one more row here rather than a second copy of the test.
    started = time.monotonic()
    secrets = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SECRETS_TEST],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    outcome = secrets.stdout.strip().splitlines()[-1] if secrets.stdout.strip() else "no output"
    rows.append(
        {
            "case": f"{SECRETS_TEST} (ops suite)",
            "load": "-",
            "faults": "known secrets in every secret field; searched for in logs, /metrics, /readyz, "
            f"check output: {'none found' if secrets.returncode == 0 else 'FAILED'} ({outcome})",
            "records": 0,
            "lost": 0,
            "duplicates": 0,
            "seconds": time.monotonic() - started,
        }
    )
    lost = sum(row["lost"] for row in rows)
    lines = [
        f"Suite: `{summary}` in {elapsed:.0f} s (exit {proc.returncode}); records lost over all cases: "
        f"**{lost}**.",
        "",
        *markdown_table(rows),
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes; print only unless --write")
    parser.add_argument("--only", help="comma-separated names (default: all)")
    parser.add_argument("--write", action="store_true", default=None, help="write into BENCHMARKS.md")
    parser.add_argument("--no-write", dest="write", action="store_false")
    opts = parser.parse_args(argv)
    write = (not opts.quick) if opts.write is None else opts.write
    names = opts.only.split(",") if opts.only else [b.name for b in BENCHES] + ["reliability"]
    unknown = set(names) - {b.name for b in BENCHES} - {"reliability"}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    for bench in BENCHES:
        if bench.name not in names:
            continue
        args = bench.quick if opts.quick else bench.full
        print(f"\n== {bench.name}: {command(bench.module, args)}", flush=True)
        lines = run_bench(bench, args)
        if write:
            replace_block(bench.name, lines, command(bench.module, args), " (part of `make bench`)")
    if "reliability" in names and not opts.quick:
        cmd = ".venv/bin/python -m pytest -m reliability -q"
        print(f"\n== reliability: {cmd}", flush=True)
        lines = run_reliability()
        if write:
            replace_block(
                "reliability", lines, cmd, " (part of `make bench`; `make test` runs the same suite)"
            )


if __name__ == "__main__":
    main()
