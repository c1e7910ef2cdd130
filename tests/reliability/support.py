"""What the reliability cases share: the daemon as a process, counting, small filesystems."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "auditstream.cli"]


@dataclass
class Figures:
    """One line of the suite's table (see conftest.py)."""

    case: str
    load: str  # the traffic held while the fault lasted
    faults: str  # what was survived
    records: int  # distinct records checked against the ground truth
    lost: int
    duplicates: int  # deliveries beyond the first
    seconds: float


RESULTS: list[Figures] = []


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """The figures as a Markdown table (rows are ``asdict(Figures)``)."""
    lines = [
        "| case | load held | faults survived | records checked | lost | duplicates | seconds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['load']} | {row['faults']} | {row['records']:,} | {row['lost']} "
            f"| {row['duplicates']:,} | {row['seconds']:.1f} |"
        )
    return lines


def start_daemon(config: Path, log: Path, *extra: str, command: str = "run") -> subprocess.Popen[bytes]:
    """``auditstream run`` (or ``backfill``) as its own process, stderr appended to ``log``."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [*CLI, command, "--config", str(config), *extra],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )


def backfill_args(since: dt.datetime, until: dt.datetime) -> list[str]:
    return ["--from", since.isoformat(), "--to", until.isoformat()]


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def duplicates(delivered: collections.Counter[tuple[str, str]]) -> int:
    """Deliveries beyond the first, over every record."""
    return sum(n - 1 for n in delivered.values() if n > 1)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# -- small filesystems (root only) --------------------------------------------------------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN, as CI runs)."""
    with tempfile.TemporaryDirectory() as probe:
        if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", probe):
            return False
        subprocess.run(["umount", probe], capture_output=True, check=True)
        return True


MOUNT_SKIP = "needs a tmpfs mount (root with CAP_SYS_ADMIN, as CI runs); the simulated full disk runs instead"


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``directory`` for the duration of the block."""
    directory.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)):
        raise RuntimeError(f"cannot mount a tmpfs on {directory}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def remount(directory: Path, options: str) -> None:
    if not _mount("-o", f"remount,{options}", str(directory)):
        raise RuntimeError(f"cannot remount {directory} with {options}")
