"""What a benchmark ran on, and writing its table into BENCHMARKS.md.

BENCHMARKS.md holds generated blocks between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``; :func:`replace_block` rewrites one block (appending it at the end
if it is not there yet), with the machine description and the command that produced it, and
leaves the hand-written text around the blocks alone.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
PACKAGES = ("auditstream", "strongdm", "grpcio", "protobuf", "orjson", "aiohttp")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return "unknown RAM"


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _commit() -> str:
    root = BENCHMARKS.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "auditstream"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown commit"
    return f"commit {head}{' + local changes to auditstream/' if dirty else ''}" if head else "unknown commit"


def describe() -> str:
    """One line: cores, memory, CPU model, OS, Python, the packages that matter, the commit."""
    return (
        f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {_memory()}, {_cpu_model()}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; {_versions()}; "
        f"{_commit()}"
    )


def command_line(module: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join([".venv/bin/python", "-m", module, *map(shlex.quote, args)])


def replace_block(name: str, lines: list[str], command: str, note: str = "", path: Path = BENCHMARKS) -> None:
    """Write ``lines`` as block ``name`` of BENCHMARKS.md, stamped with machine and command."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            start,
            f"Command: `{command}`{note}  ",
            f"Run: {stamp} on {describe()}",
            "",
            *lines,
            end,
        ]
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)
