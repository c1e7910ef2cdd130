"""What an operator does wrong, and what happens then: a stop while every sink fails, two
daemons on one checkpoint, files that cannot be used, an API nobody answers for, a umask of
000.

Each case runs the real command line as its own process against an emulator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from auditstream.emulator import Emulator, EmulatorOptions, running_emulator
from tests.e2e.support import missing, read_events, write_daemon_config, write_toml
from tests.helpers import async_wait_until, free_port, wait_until
from tests.peers.http_receiver import HttpReceiver
from tests.reliability.support import CLI, backfill_args, tail, tally

pytestmark = pytest.mark.reliability

SHUTDOWN_TIMEOUT = 3.0


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@contextlib.asynccontextmanager
async def daemon(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", "--config", str(config), stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_while_every_sink_fails_exits_0_within_the_shutdown_timeout(tmp_path, figures):
    """One receiver answers 503 to everything, another is not there at all. The stop may not
    wait for them: in-flight batches are abandoned after [engine] shutdown_timeout (their
    checkpoint did not move), and a later run with a working sink delivers every record."""
    async with Emulator(EmulatorOptions(records=300, history_records=20)) as emu, HttpReceiver() as failing:
        failing.faults.fail_with.extend([503] * 1_000_000)
        dead = f"http://127.0.0.1:{free_port()}/ingest"
        quick = {"initial": "0.1s", "maximum": "0.5s"}
        sinks = [
            {"type": "http", "name": "busy", "url": failing.url, "retry": quick},
            {"type": "http", "name": "down", "url": dead, "retry": quick},
        ]
        config = write_daemon_config(emu, tmp_path, sinks=sinks)
        document = config.read_text() + f'\n[engine]\nshutdown_timeout = "{SHUTDOWN_TIMEOUT}s"\n'
        config.write_text(document)
        log = tmp_path / "daemon.log"
        async with daemon(config, log) as proc:
            await async_wait_until(lambda: failing.attempts >= 3, 30, "the sinks to be failing")
            proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            code = await asyncio.wait_for(proc.wait(), SHUTDOWN_TIMEOUT + 30)
            took = time.monotonic() - stopped
        assert code == 0, tail(log)
        assert took < SHUTDOWN_TIMEOUT + 5, f"the stop took {took:.1f}s"
        assert b"abandoning in-flight batches" in log.read_bytes()
        # Nothing was acknowledged, so a run that can deliver sends every record.
        out = tmp_path / "out.jsonl"
        good = [{"type": "file", "name": "out", "path": str(out)}]
        config = write_daemon_config(emu, tmp_path, sinks=good)
        streams = list(emu.options.streams)
        async with daemon(config, log) as proc:
            await async_wait_until(lambda: not missing(emu, streams, read_events(out)), 60, "every record")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        delivered = read_events(out)
        lost = missing(emu, streams, delivered)
    figures(
        load=f"{len(delivered):,} records waiting for delivery",
        faults=f"SIGTERM while one HTTP receiver answers 503 and another is down: exit 0 after {took:.1f}s "
        f"(shutdown_timeout {SHUTDOWN_TIMEOUT:g}s), then a run with a working sink",
        **tally(delivered, lost),
    )
    assert not lost


def test_a_second_daemon_on_the_same_checkpoint_is_refused(tmp_path, figures):
    with running_emulator(EmulatorOptions(records=50)) as emu:
        config = write_daemon_config(emu, tmp_path)
        log = tmp_path / "first.log"
        with log.open("wb") as err:
            first = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err)
        try:
            wait_until(lambda: b"first poll succeeded" in log.read_bytes(), 30, "the first daemon")
            second = run_cli("run", "--config", str(config))
            assert second.returncode == 1
            checkpoint = tmp_path / "state" / "checkpoints.db"
            assert second.stderr.strip() == (
                f"auditstream: checkpoint {checkpoint} is in use by another auditstream (pid {first.pid}); "
                "stop that one first, or give this one its own [checkpoint] path (a backfill: its own "
                "--checkpoint)"
            )
            lock = checkpoint.with_name("checkpoints.db.lock")
            assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        finally:
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0
        # The lock dies with its holder, however it dies.
        with log.open("ab") as err:
            killed = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err)
        wait_until(lambda: log.read_bytes().count(b"first poll succeeded") >= 2, 30, "the second start")
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        with log.open("ab") as err:
            after = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err)
        wait_until(lambda: log.read_bytes().count(b"first poll succeeded") >= 3, 30, "a start after SIGKILL")
        out = tmp_path / "out.jsonl"
        streams = list(emu.options.streams)
        wait_until(lambda: not missing(emu, streams, read_events(out)), 60, "every record")
        after.send_signal(signal.SIGTERM)
        assert after.wait(30) == 0
        delivered = read_events(out)
        lost = missing(emu, streams, delivered)
    figures(
        load=f"{len(delivered):,} records",
        faults="a second `run` on the same checkpoint (refused: exit 1 naming the pid), then the holder "
        "SIGKILLed and the lock taken over",
        **tally(delivered, lost),
    )
    assert not lost


def test_the_same_backfill_twice_at_once_is_refused(tmp_path):
    import datetime as dt

    with running_emulator(EmulatorOptions(records=20_000, latency_ms=20)) as emu:
        config = write_daemon_config(emu, tmp_path)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
        until = dt.datetime.now(dt.UTC)
        log = tmp_path / "backfill.log"
        with log.open("wb") as err:
            first = subprocess.Popen(
                [*CLI, "backfill", "--config", str(config), *backfill_args(since, until)], stderr=err
            )
        try:
            wait_until(lambda: b"backfill starting" in log.read_bytes(), 30, "the first backfill")
            second = run_cli("backfill", "--config", str(config), *backfill_args(since, until))
            assert second.returncode == 1, second.stderr
            assert "is in use by another auditstream" in second.stderr
            assert f"(pid {first.pid})" in second.stderr
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(60)


def bad_file_configs(tmp_path: Path, emu_address: str, access_key: str, secret: str) -> dict[str, dict]:
    """Configurations that each name one file that cannot be used, and the key it must name."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    missing_file = tmp_path / "nowhere" / "ca.pem"

    def document(**sink: object) -> dict:
        base = {"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl"), **sink}
        source = {"endpoint": emu_address, "access_key": access_key, "secret_key": secret, "insecure": True}
        return {
            "source": source,
            "checkpoint": {"path": str(tmp_path / "state" / "checkpoints.db")},
            "sinks": [base],
            "metrics": {"listen": ""},
        }

    https = {"type": "http", "name": "siem", "url": "https://127.0.0.1:1/ingest"}
    cases = {
        "sinks[0] (siem).tls": {**document(), "sinks": [{**https, "tls": {"ca_file": str(missing_file)}}]},
        "sinks[0] (siem).tls ": {
            **document(),
            "sinks": [{**https, "tls": {"cert_file": str(missing_file), "key_file": str(missing_file)}}],
        },
        "sinks[0] (out).path": document(path=str(blocker / "events.jsonl")),
        "sinks[0] (out).dead_letter_path": document(dead_letter_path=str(blocker / "dead.jsonl")),
        "checkpoint.path": {
            **document(dead_letter_path=str(tmp_path / "dead.jsonl")),
            "checkpoint": {"path": str(blocker / "checkpoints.db")},
        },
    }
    secure = document()
    secure["source"] = {**secure["source"], "insecure": False, "ca_file": str(missing_file)}
    cases["source.ca_file"] = secure
    return cases


def test_every_unusable_file_is_one_line_and_exit_2_from_run_and_check(tmp_path, figures):
    with running_emulator(EmulatorOptions(records=10)) as emu:
        cases = bad_file_configs(tmp_path, emu.address, emu.options.access_key, emu.options.secret_key)
        for index, (key, document) in enumerate(cases.items()):
            config = write_toml(tmp_path / f"bad-{index}.toml", document)
            ran = run_cli("run", "--config", str(config))
            assert ran.returncode == 2, (key, ran.stderr)
            lines = ran.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"auditstream: {key.strip()}: "), (key, ran.stderr)
            checked = run_cli("check", "--config", str(config))
            assert checked.returncode == 2, (key, checked.stdout)
            failed = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
            assert any(f"{key.strip()}: " in line for line in failed), (key, checked.stdout)
            assert "Traceback" not in ran.stderr + checked.stderr
    figures(
        load="-",
        faults=f"{len(cases)} unusable files, each one line naming its key and exit 2 from run and check: "
        + "; ".join(key.strip() for key in cases),
        records=0,
        lost=0,
        duplicates=0,
    )


def test_an_api_that_does_not_answer_is_said_within_ten_seconds(tmp_path):
    """A black hole (a socket that accepts and never answers) makes every call wait for the
    whole [source] timeout; the daemon still says so within ten seconds."""
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        port = hole.getsockname()[1]
        document = {
            "source": {
                "endpoint": f"127.0.0.1:{port}",
                "access_key": "auth-key",
                "secret_key": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
                "insecure": True,
                "timeout": "60s",
            },
            "checkpoint": {"path": str(tmp_path / "state" / "checkpoints.db")},
            "sinks": [{"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl")}],
            "metrics": {"listen": ""},
            "logging": {"format": "json"},
        }
        config = write_toml(tmp_path / "config.toml", document)
        log = tmp_path / "daemon.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err)
        started = time.monotonic()
        try:
            wait_until(lambda: b"no answer from the StrongDM API yet" in log.read_bytes(), 15, "the notice")
            said_after = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert said_after < 12, f"said after {said_after:.1f}s (process start included)"
    assert code == 0, tail(log)
    line = next(orjson.loads(raw) for raw in log.read_bytes().splitlines() if b"no answer" in raw)
    assert line["endpoint"] == f"127.0.0.1:{port}" and "[source] endpoint" in str(line["hint"])


def test_a_refused_port_is_said_at_the_first_failure(tmp_path):
    port = free_port()
    document = {
        "source": {
            "endpoint": f"127.0.0.1:{port}",
            "access_key": "auth-key",
            "secret_key": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
            "insecure": True,
        },
        "checkpoint": {"path": str(tmp_path / "state" / "checkpoints.db")},
        "sinks": [{"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl")}],
        "metrics": {"listen": ""},
        "logging": {"format": "json"},
    }
    config = write_toml(tmp_path / "config.toml", document)
    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err)
    try:
        wait_until(lambda: b"cannot reach the StrongDM API" in log.read_bytes(), 10, "the first failure said")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, tail(log)


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_state_is_private_whatever_the_umask(tmp_path, umask):
    state = tmp_path / "deep" / "state"
    with running_emulator(EmulatorOptions(records=20)) as emu:
        config = write_daemon_config(emu, tmp_path)
        config.write_text(config.read_text().replace(str(tmp_path / "state"), str(state)))
        log = tmp_path / "daemon.log"
        with log.open("wb") as err:
            # Popen's umask, not a preexec_fn: Python code between fork and exec, in a process
            # whose emulator thread runs gRPC, hung the child now and then (then SIGABRT).
            proc = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err, umask=umask)
        try:
            wait_until(lambda: (state / "checkpoints.db").exists(), 30, "a checkpoint")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, tail(log)
    for directory in (tmp_path / "deep", state):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for name in ("checkpoints.db", "checkpoints.db.lock"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


async def test_logrotate_renaming_the_file_and_sending_sighup_loses_nothing(tmp_path):
    """logrotate's ``create`` mode renames the file sink's file, then ``postrotate`` sends
    SIGHUP (by default a death): the daemon carries on, into a new file at the path, and the
    two files hold every record once."""
    from strongdm.activities_pb2 import Activity  # type: ignore[import-untyped]

    async with Emulator(EmulatorOptions(records=200, history_records=5)) as emu:
        out = tmp_path / "out.jsonl"
        config = write_daemon_config(emu, tmp_path, sinks=[{"type": "file", "name": "out", "path": str(out)}])
        streams = list(emu.options.streams)
        log = tmp_path / "daemon.log"
        async with daemon(config, log) as proc:
            await async_wait_until(lambda: not missing(emu, streams, read_events(out)), 60, "every record")
            rotated = tmp_path / "out.jsonl.1"
            out.rename(rotated)
            proc.send_signal(signal.SIGHUP)
            await async_wait_until(lambda: b"SIGHUP ignored" in log.read_bytes(), 10, "the SIGHUP said")
            for index in range(5):
                record = Activity(id=f"after-rotation-{index}", verb="user added")
                record.completed_at.seconds, record.completed_at.nanos = divmod(time.time_ns(), 1_000_000_000)
                emu.insert("activities", record)

            def both() -> collections.Counter[tuple[str, str]]:
                return read_events(rotated) + (read_events(out) if out.exists() else collections.Counter())

            await async_wait_until(lambda: not missing(emu, streams, both()), 60, "the new records")
            assert proc.returncode is None, tail(log)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0, tail(log)
        delivered = both()
    assert not missing(emu, streams, delivered)
    assert {key for key, count in delivered.items() if count > 1} == set(), "a record in both files"
    assert out.exists(), "the new records went into the renamed file, not a new one at the path"
    assert {key for _, key in read_events(out)} == {f"after-rotation-{i}" for i in range(5)}
