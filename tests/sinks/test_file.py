"""The file sink: one line per event, mode 0640, fsync, rotation by size and age with gzip and
a bound on kept files, and write faults (disk full mid-write) without duplicated lines."""

from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import time
from typing import Any

import pytest

from auditstream.sinks import file as file_module
from auditstream.sinks.base import SinkState
from auditstream.sinks.file import FileSink, FileSinkSettings
from tests.helpers import async_wait_until
from tests.sinks.conftest import AWKWARD, FAST_RETRY, assert_delivered, envelopes


def settings(tmp_path, **overrides: Any) -> FileSinkSettings:
    config: dict[str, Any] = {
        "type": "file",
        "name": "archive",
        "path": str(tmp_path / "out" / "events.jsonl"),
        "retry": FAST_RETRY,
        "batch": {"max_age": 0},
    }
    config.update(overrides)
    return FileSinkSettings.model_validate(config)


async def started(config: FileSinkSettings, state_dir) -> FileSink:
    sink = FileSink(config, state_dir=state_dir)
    await sink.start()
    return sink


def lines(path) -> list[dict[str, Any]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle.read().splitlines()]


async def test_one_line_per_event_mode_0640_and_fsync(tmp_path, state_dir, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(file_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    config = settings(tmp_path)
    sink = await started(config, state_dir)
    batch = envelopes("activities", 5) + envelopes("queries", 5)
    await sink.send(batch)
    assert synced, "acknowledged without fsync"
    await sink.close()
    assert lines(config.path) == [e.event for e in batch]
    assert lines(config.path)[0]["message"] == AWKWARD
    assert stat.S_IMODE(os.stat(config.path).st_mode) == 0o640


async def test_cef_format_writes_cef_lines(tmp_path, state_dir):
    config = settings(tmp_path, format="cef")
    sink = await started(config, state_dir)
    await sink.send(envelopes("activities", 3))
    await sink.close()
    text = config.path.read_text().splitlines()
    assert len(text) == 3 and all(line.startswith("CEF:0|") for line in text)


async def test_rotation_by_size_gzips_and_keeps_a_bounded_number(tmp_path, state_dir):
    config = settings(
        tmp_path, rotate_bytes=4096, rotate_gzip=True, rotate_keep=3, batch={"max_events": 5, "max_age": 0}
    )
    sink = await started(config, state_dir)
    batch = envelopes("activities", 100)
    await sink.send(batch)
    await sink.close()
    rotated = sorted(config.path.parent.glob("events.jsonl.*"))
    assert len(rotated) == 3 and all(p.name.endswith(".gz") for p in rotated)
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o640 for p in rotated)
    assert all(p.stat().st_size > 0 for p in rotated)
    kept = [event for p in rotated for event in lines(p)] + lines(config.path)
    assert [e["seq"] for e in kept] == list(range(100 - len(kept), 100))
    assert all(len(gzip.decompress(p.read_bytes())) <= 4096 for p in rotated)


async def test_rotation_by_age(tmp_path, state_dir):
    config = settings(tmp_path, rotate_age="100ms")
    sink = await started(config, state_dir)
    await sink.send(envelopes("activities", 2))
    started_at = time.monotonic()
    await async_wait_until(lambda: time.monotonic() - started_at > 0.15, what="the file to age")
    await sink.send(envelopes("activities", 2, start=2))
    await sink.close()
    (rotated,) = config.path.parent.glob("events.jsonl.*")
    assert [e["seq"] for e in lines(rotated)] == [0, 1]
    assert [e["seq"] for e in lines(config.path)] == [2, 3]


async def test_leftover_rotated_files_are_compressed_at_start(tmp_path, state_dir):
    config = settings(tmp_path, rotate_gzip=True)
    config.path.parent.mkdir(parents=True)
    leftover = config.path.with_name("events.jsonl.20240501T120000.000000Z")
    leftover.write_text('{"seq": 1}\n')
    sink = await started(config, state_dir)
    await sink.close()
    assert not leftover.exists()
    assert lines(leftover.with_name(leftover.name + ".gz")) == [{"seq": 1}]


async def test_a_failing_disk_is_retried_without_duplicate_or_partial_lines(tmp_path, state_dir, monkeypatch):
    config = settings(tmp_path, batch={"max_events": 10, "max_age": 0})
    sink = await started(config, state_dir)
    real_write = os.write
    failures = {"left": 3}

    def flaky_write(fd: int, data: bytes | memoryview) -> int:
        if failures["left"] > 0 and len(data) > 100:
            failures["left"] -= 1
            real_write(fd, bytes(data[: len(data) // 2]))  # half a batch lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(file_module.os, "write", flaky_write)
    batch = envelopes("activities", 50)
    await sink.send(batch)
    assert failures["left"] == 0 and sink.health().state is SinkState.OK
    await sink.close()
    assert_delivered([lines(config.path)], batch, allow_retried_copies=False)


async def test_an_unfinished_last_line_left_by_a_crash_is_cut_at_start(tmp_path, state_dir):
    config = settings(tmp_path)
    config.path.parent.mkdir(parents=True)
    config.path.write_bytes(b'{"before": 1}\n' + b'{"torn": "by a kill in the middle of a wr')
    sink = await started(config, state_dir)
    batch = envelopes("activities", 3)
    await sink.send(batch)
    await sink.close()
    assert lines(config.path) == [{"before": 1}] + [e.event for e in batch]


async def test_probe_reports_writability(tmp_path, state_dir):
    assert (await FileSink(settings(tmp_path), state_dir=state_dir).probe()).ok
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = settings(tmp_path, path=str(blocker / "events.jsonl"))
    refused = await FileSink(config, state_dir=state_dir).probe()
    assert not refused.ok
    assert f"{blocker} is not a directory" in refused.detail
    with pytest.raises(ValueError, match="cannot open"):
        await FileSink(config, state_dir=state_dir).start()


WRITER = """
import sys
from pathlib import Path
from auditstream.sinks.file import FileSinkSettings, RotatingFile, compress

path, name, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = FileSinkSettings(type="file", name="shared", path=Path(path), rotate_bytes=4096, rotate_gzip=True)
rotating = RotatingFile(settings)
rotating.open()
for batch in range(batches):
    lines = b"".join(f"{name}-{batch}-{i}\\n".encode() for i in range(20))
    rotated = rotating.append(lines)
    if rotated is not None:
        compress(rotated)  # at once, where the sink compresses in the background: the same race
rotating.close()
"""


def test_two_processes_on_one_file_sink_path_lose_and_tear_no_line(tmp_path):
    """A backfill runs beside the daemon with the same configuration (README, Backfill), so
    two processes append to, rotate and compress one file: every line of both is found once,
    whole, in the file or a rotated one."""
    import subprocess
    import sys

    path = tmp_path / "out" / "events.jsonl"
    path.parent.mkdir()
    batches = 400
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(batches)], stderr=subprocess.PIPE
        )
        for name in ("daemon", "backfill")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    found: list[str] = []
    for part in sorted(path.parent.iterdir()):
        data = gzip.decompress(part.read_bytes()) if part.name.endswith(".gz") else part.read_bytes()
        if part.name.startswith(".") or part.name.endswith(".tmp"):
            assert not data, f"{part.name} holds data"
            continue
        assert not data or data.endswith(b"\n"), f"{part.name} ends in a torn line"
        found += data.decode().splitlines()
    expected = {
        f"{name}-{b}-{i}" for name in ("daemon", "backfill") for b in range(batches) for i in range(20)
    }
    assert len(found) == len(set(found)), "a line written twice"
    assert set(found) == expected, (
        f"{len(expected - set(found))} lines lost, {len(set(found) - expected)} torn"
    )
