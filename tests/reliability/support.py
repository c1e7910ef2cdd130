"""What the reliability cases share: the daemon as a process (started, run until the sink holds
the ground truth, stopped), the comparison with the emulator's own records, counting, small
filesystems."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from auditstream.emulator import Emulator
from auditstream.formats import to_event
from auditstream.sdm.registry import STREAMS, StreamKind
from tests.e2e.support import missing, read_events
from tests.helpers import wait_until

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


@dataclass
class Daemon:
    """``auditstream run`` as its own process; ``restart`` starts it again on the same config
    and log (after a kill)."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.proc = start_daemon(self.config, self.log)


@contextlib.contextmanager
def daemon_running(config: Path, log: Path) -> Iterator[Daemon]:
    """The daemon for the duration of the block; stopped with SIGTERM at its end, where it must
    exit 0."""
    daemon = Daemon(config, log)
    try:
        yield daemon
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(30)
    assert code == 0, tail(log)


def wait_for_every_record(emu: Emulator, streams: list[str], out: Path, timeout: float = 60) -> None:
    """Wait until live traffic has ended and the file sink at ``out`` holds every record."""
    wait_until(lambda: emu.live_finished and emu.store.pending_count() == 0, 60, "live traffic to end")
    wait_until(lambda: not missing(emu, streams, read_events(out)), timeout, "every record")


def run_daemon_until_complete(
    emu: Emulator, streams: list[str], config: Path, out: Path, log: Path
) -> collections.Counter[tuple[str, str]]:
    """Start the daemon, wait for every record (live traffic included), stop it cleanly; what
    the file sink holds then."""
    with daemon_running(config, log):
        wait_for_every_record(emu, streams, out)
    return read_events(out)


def backfill_args(since: dt.datetime, until: dt.datetime) -> list[str]:
    return ["--from", since.isoformat(), "--to", until.isoformat()]


# -- the sink's file against the emulator's own records ----------------------------------------
#
# Records are compared by what they hold, not by their key: the key (``StreamSpec.record_key``,
# the event's ``id`` for queries and history) is derived by the same code on the daemon's side
# and in the emulator's truth, so a bug there (two records under one key, one dropped as a
# duplicate) would hide on both sides. A record's identity is its stream and every field of
# its event but that derived ``id``, as canonical JSON; the emulator's side is built from the
# records it stores and serves, one by one.

Identity = tuple[str, bytes]


def identity(event: dict[str, Any]) -> Identity:
    stream = event["logType"]
    fields = (
        event
        if STREAMS[stream].kind is StreamKind.ACTIVITY
        else {k: v for k, v in event.items() if k != "id"}
    )
    return stream, orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def truth_identities(emu: Emulator, streams: Collection[str]) -> set[Identity]:
    """The identity of every record the emulator holds (and serves) now."""
    emu.store.publish_due()
    identities: set[Identity] = set()
    count = 0
    for name in streams:
        spec = STREAMS[name]
        with emu.store.lock:
            payloads = list(emu.store.stream(name).payloads)
        for payload in payloads:
            identities.add(identity(to_event(spec, spec.record_class.FromString(payload))))
        count += len(payloads)
    assert len(identities) == count, "two of the emulator's records look alike: the identity is not enough"
    return identities


def delivered_lines(path: Path) -> list[Identity]:
    """The identity of every complete line of a file sink's output, in file order."""
    data = path.read_bytes() if path.exists() else b""
    return [identity(orjson.loads(line)) for line in data[: data.rfind(b"\n") + 1].splitlines()]


@dataclass
class Comparison:
    """A file sink's output against the emulator's records."""

    delivered: collections.Counter[Identity]  # with repeats
    lost: set[Identity]  # in the emulator, never delivered
    invented: set[Identity]  # delivered, not in the emulator


def compare(emu: Emulator, streams: Collection[str], out: Path) -> Comparison:
    delivered = collections.Counter(delivered_lines(out))
    truth = truth_identities(emu, streams)
    return Comparison(delivered, truth - delivered.keys(), delivered.keys() - truth)


def assert_exactly_the_truth(result: Comparison, what: str = "") -> None:
    """Nothing lost and nothing invented (each named by its stream and fields)."""
    assert not result.lost, f"{len(result.lost)} records lost{what}, e.g. {sorted(result.lost)[:3]}"
    assert not result.invented, (
        f"{len(result.invented)} records invented{what}, e.g. {sorted(result.invented)[:3]}"
    )


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def duplicates(delivered: collections.Counter[tuple[str, str]]) -> int:
    """Deliveries beyond the first, over every record."""
    return sum(n - 1 for n in delivered.values() if n > 1)


def tally(delivered: collections.Counter[tuple[str, str]], lost: Collection[Any]) -> dict[str, int]:
    """The counts of a ``figures`` line for one sink: records delivered, lost, duplicates."""
    return {"records": len(delivered), "lost": len(lost), "duplicates": duplicates(delivered)}


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


MOUNT_SKIP = "needs a tmpfs mount (root with CAP_SYS_ADMIN, as CI runs)"


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


def swap_paths(first: Path, second: Path) -> None:
    """Exchange two paths in one step (``renameat2`` with ``RENAME_EXCHANGE``), so that a
    process using either never finds it missing (it would recreate a missing directory)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def remount(directory: Path, options: str) -> None:
    if not _mount("-o", f"remount,{options}", str(directory)):
        raise RuntimeError(f"cannot remount {directory} with {options}")
