"""Storage going wrong: a corrupt checkpoint, a checkpoint directory that cannot be written
at start-up, checkpoint writes failing mid-run, a full disk under the file sink.

Each case asserts a clear error, that the checkpoint never claims a record the sink does not
hold (for every stream: every record older than the watermark, and every key the checkpoint
lists as delivered, is in the sink's file), and that once the fault is fixed the run ends
with exactly the emulator's records delivered (nothing missing, nothing invented). The
size-limited and read-only filesystems are real tmpfs mounts (root with CAP_SYS_ADMIN, as CI
runs). Faults that need no such right run everywhere: a regular file in the checkpoint
directory's place (which root cannot write through either), checkpoint writes refused
in-process mid-run (the store turned read-only under the running engine), and a full disk
simulated in-process (ENOSPC from ``os.write``, half of each write landing first).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from auditstream.emulator import Emulator, EmulatorOptions, running_emulator
from auditstream.engine.checkpoint import CheckpointError, CheckpointStore
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES
from auditstream.sinks import file as file_module
from auditstream.sinks.base import SinkState
from tests.e2e.support import (
    daemon_config,
    live_engine,
    missing,
    read_events,
    run_until_complete,
    truth_keys,
    write_daemon_config,
)
from tests.helpers import async_wait_until, wait_until
from tests.reliability.support import (
    MOUNT_SKIP,
    assert_exactly_the_truth,
    can_mount,
    compare,
    daemon_running,
    duplicates,
    remount,
    run_daemon_until_complete,
    start_daemon,
    tally,
    tmpfs,
    wait_for_every_record,
)

pytestmark = pytest.mark.reliability

STREAMS = list(DEFAULT_STREAM_NAMES)
MOUNTABLE = can_mount()
needs_mount = pytest.mark.skipif(not MOUNTABLE, reason=MOUNT_SKIP)
# No late records here: every record is visible by the time the daemon lists past it, so
# "older than the watermark" must mean "in the sink".
LIVE: dict[str, Any] = {"live": 20, "live_for": 7, "live_session_seconds": (0.5, 2.0)}


def checkpoint_claims(emu: Emulator, checkpoint: Path) -> set[tuple[str, str]]:
    """Every record the checkpoint says is delivered: older than its stream's watermark, or
    listed among the stream's delivered keys (read through a connection of its own, as a
    second reader of the store the daemon writes)."""
    store = CheckpointStore(checkpoint)
    try:
        states = store.load()
    finally:
        store.close()
    claimed: set[tuple[str, str]] = set()
    for stream, state in states.items():
        claimed |= {(stream, key) for key in state.delivered}
        claimed |= {(stream, key) for key, t in emu.filter_truth(stream) if t < state.watermark_ns}
    return claimed


def assert_checkpoint_holds(emu: Emulator, checkpoint: Path, out: Path) -> int:
    claimed = checkpoint_claims(emu, checkpoint)
    unheld = claimed - set(read_events(out))
    assert not unheld, (
        f"the checkpoint claims {len(unheld)} records the sink lacks, e.g. {sorted(unheld)[:3]}"
    )
    return len(claimed)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("auditstream: ")]


def run_to_failure(config: Path, log: Path, timeout: float = 60) -> tuple[int, str]:
    proc = start_daemon(config, log)
    code = proc.wait(timeout)
    return code, log.read_text()


def wait_for_the_backlog(emu: Emulator, out: Path) -> None:
    initial = truth_keys(emu, STREAMS)
    wait_until(lambda: initial <= set(read_events(out)), 60, "the backlog")


def test_corrupt_checkpoint_stops_with_the_way_out_and_the_backup_loses_nothing(tmp_path, figures):
    options = EmulatorOptions(seed=41, records=300, **LIVE)
    out, log = tmp_path / "out.jsonl", tmp_path / "daemon.log"
    checkpoint = tmp_path / "state" / "checkpoints.db"
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        with daemon_running(config, log):
            wait_for_the_backlog(emu, out)
        # A torn file: cut in the middle (what transactions prevent, and a disk or an operator
        # may still do).
        whole = checkpoint.read_bytes()
        checkpoint.write_bytes(whole[: len(whole) // 2])
        torn = checkpoint.read_bytes()
        lines_before = out.read_bytes().count(b"\n")

        code, stderr = run_to_failure(config, tmp_path / "corrupt.log")
        assert code == 2, stderr  # a file run cannot use: a configuration problem, not retried
        (message,) = error_lines(stderr)
        assert f"checkpoint {checkpoint} is corrupt" in message
        assert f"cp {checkpoint}.bak {checkpoint}" in message, "the way out is named"
        assert "Traceback" not in stderr
        assert checkpoint.read_bytes() == torn, "the evidence is left alone"
        assert out.read_bytes().count(b"\n") == lines_before, "nothing delivered without a checkpoint"

        shutil.copy(f"{checkpoint}.bak", checkpoint)  # the documented way out
        run_daemon_until_complete(emu, STREAMS, config, out, log)
        result = compare(emu, STREAMS, out)
    figures(
        load=f"{options.live:g} records/s live across the failed start",
        faults="checkpoint cut in half; exit 2 naming it and the .bak; restored from .bak",
        **tally(result.delivered, result.lost),
    )
    assert_exactly_the_truth(result)
    assert duplicates(result.delivered) == 0, "the backup of a clean stop holds everything: nothing re-sent"


def test_unwritable_checkpoint_directory_at_start_is_refused(tmp_path, figures):
    options = EmulatorOptions(seed=42, records=50)
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        if MOUNTABLE:
            how = "read-only filesystem"
            with tmpfs(state, "1m"):
                remount(state, "ro")
                code, stderr = run_to_failure(config, tmp_path / "ro.log")
        else:  # root ignores permission bits: a regular file where the directory should be
            how = "a regular file in the directory's place"
            state.write_text("not a directory")
            code, stderr = run_to_failure(config, tmp_path / "ro.log")
    assert code == 2, stderr  # a configuration problem: systemd and the backfill Job do not retry it
    (message,) = [line for line in error_lines(stderr) if "checkpoint.path" in line]
    assert f"directory {state} is not writable" in message or f"{state} is not a directory" in message, (
        message
    )
    assert "Traceback" not in stderr
    assert not out.exists(), "nothing is delivered when progress cannot be kept"
    figures(
        load="50-record backlog",
        faults=f"checkpoint directory unwritable at start ({how}): exit 2 before delivering",
        records=0,
        lost=0,
        duplicates=0,
    )


@needs_mount
def test_checkpoint_disk_filling_up_mid_run_stops_without_overclaiming(tmp_path, figures):
    """Mid-run, the checkpoint's filesystem fills up (a 16 MiB tmpfs, then a file eating what
    is left): the daemon stops (exit 1, one line naming the checkpoint and the cause), having
    claimed nothing the sink lacks; with space back it ends with every record."""
    options = EmulatorOptions(seed=43, records=300, **LIVE)
    out, log = tmp_path / "out.jsonl", tmp_path / "daemon.log"
    state = tmp_path / "state"
    checkpoint = state / "checkpoints.db"
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(running_emulator(options))
        stack.enter_context(tmpfs(state, "16m"))
        config = write_daemon_config(emu, tmp_path)
        daemon = start_daemon(config, log)
        stack.callback(lambda: daemon.poll() is None and (daemon.kill(), daemon.wait()))  # none left over
        wait_for_the_backlog(emu, out)
        filler = state / "filler"
        with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:  # closing may fail too
            while True:
                handle.write(b"\0" * 65536)
        code = daemon.wait(60)
        stderr = log.read_text()
        assert code == 1, stderr
        (message,) = error_lines(stderr)
        assert f"cannot write checkpoint {checkpoint}" in message, message
        assert "none are lost" in message
        filler.unlink()
        claimed = assert_checkpoint_holds(emu, checkpoint, out)
        run_daemon_until_complete(emu, STREAMS, config, out, log)
        result = compare(emu, STREAMS, out)
    figures(
        load=f"{options.live:g} records/s live",
        faults=f"checkpoint filesystem full mid-run: exit 1, checkpoint claims {claimed:,} records, "
        "all in the sink; restarted with space back",
        **tally(result.delivered, result.lost),
    )
    assert_exactly_the_truth(result)


async def test_checkpoint_writes_refused_mid_run_stop_without_overclaiming(tmp_path, figures):
    """The same fault with no mount rights needed: the store under the running engine turns
    read-only (every write refused, as a failing disk would), in-process."""
    options = EmulatorOptions(seed=46, records=300, **LIVE)
    out = tmp_path / "out.jsonl"
    async with Emulator(options) as emu:
        config = daemon_config(emu, tmp_path)
        engine = live_engine(config)
        running = asyncio.create_task(engine.run())
        await async_wait_until(lambda: truth_keys(emu, STREAMS) <= set(read_events(out)), 60, "the backlog")
        engine.store._open().execute("PRAGMA query_only = ON")
        with pytest.raises(CheckpointError, match=f"cannot write checkpoint {engine.store.path}") as raised:
            await asyncio.wait_for(running, 60)
        assert "none are lost" in str(raised.value)
        claimed = await asyncio.to_thread(assert_checkpoint_holds, emu, engine.store.path, out)
        engine = live_engine(config)
        await run_until_complete(engine, emu, out, deadline_s=90)
        result = compare(emu, STREAMS, out)
    figures(
        load=f"{options.live:g} records/s live",
        faults=f"checkpoint writes refused mid-run (in-process): stopped, checkpoint claims {claimed:,} "
        "records, all in the sink; restarted",
        **tally(result.delivered, result.lost),
    )
    assert_exactly_the_truth(result)


@needs_mount
def test_full_disk_under_the_file_sink_holds_the_checkpoint_then_resumes(tmp_path, figures):
    """The sink's file lives on a 512 KiB tmpfs, too small for the backlog."""
    options = EmulatorOptions(seed=44, records=300, **LIVE)
    log = tmp_path / "daemon.log"
    disk = tmp_path / "disk"
    out = disk / "out.jsonl"
    checkpoint = tmp_path / "state" / "checkpoints.db"
    with running_emulator(options) as emu, tmpfs(disk, "512k"):
        sink = {"type": "file", "name": "out", "path": str(out)}
        retry = {"initial": "100ms", "maximum": "500ms"}
        config = write_daemon_config(emu, tmp_path, sinks=[sink | {"retry": retry}])
        with daemon_running(config, log):
            full = "No space left on device"
            wait_until(lambda: log.read_text().count(full) >= 3, 60, "the disk to fill up and writes to fail")
            retry_lines = [
                json.loads(x) for x in log.read_text().splitlines() if full in x and x.startswith("{")
            ]
            assert retry_lines[0]["event"] == "sink delivery failed; retrying"
            assert retry_lines[0]["error"] == f"cannot write {out}: {full}"
            claimed = assert_checkpoint_holds(emu, checkpoint, out)
            held_back = len(missing(emu, STREAMS, read_events(out)))
            assert held_back > 0
            remount(disk, "size=16m")  # space comes back
            wait_for_every_record(emu, STREAMS, out)
        result = compare(emu, STREAMS, out)  # every line parses: no half-written line survived
    figures(
        load=f"{options.live:g} records/s live; {held_back:,} records held back while full",
        faults=f"file sink on a full 512 KiB tmpfs (ENOSPC; checkpoint claimed {claimed:,} records, "
        "all written), then grown",
        **tally(result.delivered, result.lost),
    )
    assert_exactly_the_truth(result)
    assert duplicates(result.delivered) == 0, "a failed write is cut back, never written twice"


async def test_full_disk_simulated_enospc(tmp_path, monkeypatch, figures):
    """The same with ENOSPC raised by ``os.write`` in-process, half of each write landing
    first: the worst moment a real disk can choose, and a case that needs no mount rights."""
    options = EmulatorOptions(seed=45, records=300, **LIVE)
    out = tmp_path / "out.jsonl"
    real_write = file_module.os.write
    disk = {"full": False, "refused": 0}

    def write(fd: int, data: Any) -> int:
        if disk["full"] and fd > 2 and len(data) > 1:
            disk["refused"] += 1
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(file_module.os, "write", write)
    async with Emulator(options) as emu:
        sink = {"type": "file", "name": "out", "path": str(out), "fsync": False}
        retry = {"initial": "100ms", "maximum": "500ms"}
        config = daemon_config(emu, tmp_path, sinks=[sink | {"retry": retry}])
        engine = live_engine(config)

        async def fill_then_free() -> tuple[int, str | None]:
            await async_wait_until(lambda: sum(read_events(out).values()) >= 300, 30, "300 events")
            disk["full"] = True
            await async_wait_until(lambda: disk["refused"] >= 3, 30, "writes to fail")
            sink = engine.sink_health()["out"]
            assert sink.state is SinkState.RETRYING
            claimed = await asyncio.to_thread(assert_checkpoint_holds, emu, engine.store.path, out)
            disk["full"] = False
            return claimed, sink.last_error

        fault = asyncio.create_task(fill_then_free())
        await run_until_complete(engine, emu, out, deadline_s=60)
        claimed, error = await fault
        result = compare(emu, STREAMS, out)
    figures(
        load=f"{options.live:g} records/s live",
        faults=f"simulated ENOSPC, {disk['refused']} writes refused half-way; checkpoint claimed "
        f"{claimed:,} records, all written",
        **tally(result.delivered, result.lost),
    )
    assert error == f"cannot write {out}: No space left on device"
    assert_exactly_the_truth(result)
    assert duplicates(result.delivered) == 0
