"""A wrong system clock loses nothing: ahead for one run, ahead or behind all along, and a
checkpoint written while the clock was a month ahead.

The daemon runs as its own process under libfaketime (Debian's ``faketime``), its wall clock
shifted while its monotonic clock stays true (``FAKETIME_DONT_FAKE_MONOTONIC``); the emulator
keeps the true time, as StrongDM's servers would. Before windows followed the API's clock, one
run ten minutes ahead left a five-minute hole (6,281 of 14,978 records in the first report), a
clock ahead all along delivered nothing, and one behind delivered everything ten minutes late.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from auditstream.emulator import EmulatorOptions, running_emulator
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES, NANOS_PER_SECOND
from tests.e2e.support import missing, read_events, write_daemon_config
from tests.helpers import wait_until
from tests.reliability.support import CLI, duplicates, tail, tally, wait_for_every_record

pytestmark = pytest.mark.reliability

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
STREAMS = list(DEFAULT_STREAM_NAMES)
DAY_NS = 86_400 * NANOS_PER_SECOND
# Late records within the tail (5 s in tests/e2e/support.py): the clock, not the sweep, is
# what these cases are about, and nothing then waits a whole overlap for a sweep.
LIVE = {"records": 200, "live": 40.0, "late_rate": 0.1, "late_max_seconds": 4.0}
SHORT_SESSIONS = {"live_session_seconds": (0.5, 3.0)}


def clock_env(offset: str | None) -> dict[str, str]:
    """The environment of a daemon whose wall clock is ``offset`` ("+10m", "-10m") off."""
    env = dict(os.environ)
    if offset is not None:
        assert LIBFAKETIME.exists(), "Debian package faketime is missing (make apt-deps installs it)"
        env |= {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    return env


class Daemon:
    """``auditstream run`` with a shifted clock, for the duration of a ``with`` block."""

    def __init__(self, config: Path, log: Path, offset: str | None = None) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [*CLI, "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=clock_env(offset),
            )
        self.log = log

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        assert code == 0, tail(self.log)


def log_events(log: Path, event: str) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]
    return [line for line in lines if event in str(line.get("event", ""))]


def test_faketime_shifts_the_daemons_wall_clock_only() -> None:
    """The premise of this file: the preloaded library really moves the child's clock."""
    probe = "import time; print(time.time(), time.monotonic())"
    plain = subprocess.run([*CLI[:1], "-c", probe], capture_output=True, text=True, check=True)
    shifted = subprocess.run(
        [*CLI[:1], "-c", probe], capture_output=True, text=True, check=True, env=clock_env("+10m")
    )
    wall_plain, _ = map(float, plain.stdout.split())
    wall_shifted, _ = map(float, shifted.stdout.split())
    assert 590 < wall_shifted - wall_plain < 610


def test_one_run_with_the_clock_ten_minutes_ahead_then_normal_loses_nothing(tmp_path, figures):
    options = EmulatorOptions(seed=41, live_for=16, **LIVE, **SHORT_SESSIONS)
    out, log = tmp_path / "out.jsonl", tmp_path / "daemon.log"
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        for offset in (None, "+10m"):
            with Daemon(config, log, offset):
                target = len(read_events(out)) + 150
                wait_until(lambda t=target: len(read_events(out)) >= t, 60, "records delivered")
        assert not emu.live_finished, "the normal run that follows must still see live traffic"
        with Daemon(config, log):
            wait_for_every_record(emu, STREAMS, out, 90)
        delivered = read_events(out)
        lost = missing(emu, STREAMS, delivered)
    skews = [line["skew_seconds"] for line in log_events(log, "clock is ahead of")]
    figures(
        load=f"{options.live:g} records/s live for {options.live_for:g}s, 10% late by up to 4 s",
        faults="one run with the system clock 10 minutes ahead (libfaketime), between two normal ones",
        **tally(delivered, lost),
    )
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert skews and all(500 < float(str(s)) < 620 for s in skews), skews


@pytest.mark.parametrize("offset", ["+10m", "-10m"])
def test_a_clock_ten_minutes_off_all_along_loses_nothing_and_is_timely(tmp_path, figures, offset):
    """Every record is delivered while the test waits (well under the ten minutes a slow clock
    used to delay it by), and the skew is said in the log."""
    options = EmulatorOptions(seed=42, live_for=10, **LIVE, **SHORT_SESSIONS)
    out, log = tmp_path / "out.jsonl", tmp_path / "daemon.log"
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        with Daemon(config, log, offset):
            wait_for_every_record(emu, STREAMS, out, 90)
        delivered = read_events(out)
        lost = missing(emu, STREAMS, delivered)
    direction = "ahead of" if offset.startswith("+") else "behind"
    figures(
        load=f"{options.live:g} records/s live for {options.live_for:g}s, 10% late by up to 4 s",
        faults=f"system clock {offset[1:]} {'ahead' if offset.startswith('+') else 'behind'} all along",
        **tally(delivered, lost),
    )
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert log_events(log, f"clock is {direction}"), tail(log)


def test_a_checkpoint_a_month_in_the_future_is_pulled_back_and_loses_nothing(tmp_path, figures):
    options = EmulatorOptions(seed=43, live_for=12, **LIVE, **SHORT_SESSIONS)
    out, log = tmp_path / "out.jsonl", tmp_path / "daemon.log"
    checkpoint = tmp_path / "state" / "checkpoints.db"
    with running_emulator(options) as emu:
        config = write_daemon_config(emu, tmp_path)
        with Daemon(config, log):
            wait_until(lambda: len(read_events(out)) >= 400, 60, "records delivered")
        with contextlib.closing(sqlite3.connect(checkpoint)) as db, db:
            before = dict(db.execute("SELECT name, watermark_ns FROM streams").fetchall())
            shifted_at_ns = time.time_ns()
            db.execute(
                "UPDATE streams SET watermark_ns = watermark_ns + ?, swept_ns = swept_ns + ?",
                (30 * DAY_NS, 30 * DAY_NS),
            )
        checked = subprocess.run(
            [*CLI, "check", "--config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        warning = next(line for line in checked.stdout.splitlines() if " checkpoint " in line)
        assert warning.startswith("WARN") and f"{len(STREAMS)} streams" in warning, checked.stdout
        assert not emu.live_finished, "records must keep arriving while the checkpoint is wrong"
        with Daemon(config, log):
            wait_for_every_record(emu, STREAMS, out, 90)
        delivered = read_events(out)
        lost = missing(emu, STREAMS, delivered)
    pulled = log_events(log, "checkpoint watermark lies ahead of the API's clock")
    figures(
        load=f"{options.live:g} records/s live for {options.live_for:g}s",
        faults="every watermark of the checkpoint moved 30 days ahead between two runs",
        **tally(delivered, lost),
    )
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert {line["stream"] for line in pulled} == set(STREAMS)
    # Each stream is as far ahead as its watermark was moved: 30 days past where it was, which
    # is near now for a stream that was up to date and up to 8 days (start_at) earlier for one
    # that was still catching up when the first run stopped (on a loaded box, some are).
    for line in pulled:
        expected = (before[line["stream"]] + 30 * DAY_NS - shifted_at_ns) / 1e9
        assert expected > 21 * 86_400 and float(str(line["ahead_seconds"])) > expected - 300, line
    assert duplicates(delivered) < len(delivered), "re-listing is bounded, not everything twice"


def test_a_clock_days_off_is_refused_naming_the_clock(tmp_path):
    """Requests are signed with the date: two days off, the API refuses the key, and the one
    line ``check`` prints says the clock may be why."""
    with running_emulator(EmulatorOptions(records=10)) as emu:
        config = write_daemon_config(emu, tmp_path)
        checked = subprocess.run(
            [*CLI, "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clock_env("+2d"),
        )
    api = next(line for line in checked.stdout.splitlines() if " api " in f" {line} ")
    assert checked.returncode == 1, checked.stdout
    assert api.startswith("FAIL") and "UNAUTHENTICATED" in api and "system clock" in api, api
