"""``auditstream backfill``: a past period once, with progress, resumable, never touching the
daemon's checkpoints."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditstream.emulator import Emulator, EmulatorOptions, running_emulator
from auditstream.engine.engine import Engine, RunPlan
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES, NANOS_PER_SECOND
from tests.e2e.support import (
    daemon_config,
    daemon_config_document,
    missing,
    read_events,
    write_daemon_config,
    write_toml,
)
from tests.helpers import wait_until


def backfill(config: Path, since: dt.datetime, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditstream.cli",
            "backfill",
            "--config",
            str(config),
            "--from",
            since.strftime("%Y-%m-%d"),
            "--progress",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def since() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=8)


@pytest.mark.slow
def test_backfill_of_100k_records_is_complete_with_progress(tmp_path, since):
    # 22,000 activities + 22,000 queries + 26 x 2,200 history records + 2,200 secret logs = 103,400
    options = EmulatorOptions(seed=3, records=22_000)
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        proc = backfill(config, since)
        _, stderr = proc.communicate(timeout=300)
        text = stderr.decode()
        assert proc.returncode == 0, text[-3000:]
        delivered = read_events(tmp_path / "out.jsonl")
        assert sum(delivered.values()) >= 100_000
        assert not missing(emu, list(DEFAULT_STREAM_NAMES), delivered)
    assert all(n == 1 for n in delivered.values()), "a clean backfill sends no duplicates"
    assert "records/s" in text and "ETA" in text and "%" in text, "progress is shown"
    assert "backfill complete: 103,400 records" in text
    assert not (tmp_path / "state" / "checkpoints.db").exists(), "the daemon's checkpoint is never touched"


def test_interrupted_backfill_resumes_where_it_stopped(tmp_path, since):
    options = EmulatorOptions(seed=5, records=6000, latency_ms=2)
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path, source={"page_size": 50})
        out = tmp_path / "out.jsonl"
        first = backfill(config, since)
        wait_until(
            lambda: (out.exists() and out.stat().st_size > 200_000) or first.poll() is not None, 60, "output"
        )
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 1, "an interrupted backfill is not a success"
        assert "interrupted (run the same command again to resume)" in err.decode()
        partial = sum(read_events(out).values())
        second = backfill(config, since)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()[-2000:]
        delivered = read_events(out)
        assert not missing(emu, list(DEFAULT_STREAM_NAMES), delivered)
    resent = sum(delivered.values()) - len(delivered)
    assert 0 < partial < len(delivered), "the first run really was cut short"
    assert resent <= len(DEFAULT_STREAM_NAMES) * 50, f"resuming re-sent {resent} records"
    checkpoints = list((tmp_path / "state").glob("backfill-*.db"))
    assert len(checkpoints) == 1 and not (tmp_path / "state" / "checkpoints.db").exists()


def test_backfill_usage_errors_exit_2(tmp_path):
    doc = daemon_config_document("127.0.0.1:1", "auth-x", "c2VjcmV0LWtleS1mb3ItdXNhZ2UtdGVzdHM=", tmp_path)
    config = write_toml(tmp_path / "config.toml", doc)
    next_week = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).strftime("%Y-%m-%d")
    cases = [
        ["--from", "yesterday"],
        ["--from", "2024-05-02", "--to", "2024-05-01"],
        ["--from", "2024-05-01", "--streams", "activites"],
        # A date in the future, typed by mistake, would keep a "one-shot" backfill running
        # for days (--to) or export nothing (--from): said at once instead.
        ["--from", "2024-05-01", "--to", next_week],
        ["--from", next_week],
    ]
    for args in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "auditstream.cli", "backfill", "--config", str(config), *args],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.decode().startswith("auditstream: --"), proc.stderr


async def test_a_backfill_to_now_ends_a_second_after_now_not_a_poll_interval_later(tmp_path):
    """``--to`` a moment ahead (or "now"): the last window is listed once the end is reached,
    not after a whole ``poll_interval`` (30 s here) of waiting for new ground."""
    async with Emulator(EmulatorOptions(seed=5, records=50)) as emu:
        config = daemon_config(emu, tmp_path, streams={"poll_interval": "30s"})
        now = time.time_ns()
        plan = RunPlan(
            streams=["activities", "roles_history"],
            checkpoint_path=tmp_path / "backfill.db",
            backfill_from_ns=now - 9 * 86_400 * NANOS_PER_SECOND,
            backfill_to_ns=now + NANOS_PER_SECOND,
        )
        engine = Engine(config, plan)
        await asyncio.wait_for(engine.run(), 10)
        delivered = read_events(tmp_path / "out.jsonl")
        assert not missing(emu, plan.streams, delivered)
