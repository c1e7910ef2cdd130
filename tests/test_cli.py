"""The commands as a user runs them: exit codes, one-line errors, signals, the demo."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from auditstream.emulator import DEMO_SECRET_KEY, EmulatorOptions, running_emulator
from tests.e2e.support import daemon_config_document, write_toml
from tests.helpers import free_port, wait_until

CLI = [sys.executable, "-m", "auditstream.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(EmulatorOptions(records=50)) as emu:
        yield emu


def config_for(emu, tmp_path: Path, **changes) -> Path:
    doc = daemon_config_document(emu.address, emu.options.access_key, emu.options.secret_key, tmp_path)
    for section, values in changes.items():
        if isinstance(values, list):
            doc[section] = values
        else:
            doc.setdefault(section, {}).update(values)
    return write_toml(tmp_path / "config.toml", doc)


def test_check_passes_with_one_line_per_check(emulator, tmp_path):
    result = run_cli("check", "--config", str(config_for(emulator, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "config"],
        ["ok", "files"],
        ["ok", "api"],
        ["ok", "checkpoint"],
        ["ok", "sink"],
    ]
    assert "29 streams, 1 sink" in lines[0]
    assert emulator.options.access_key in lines[2]
    assert "system clock agrees with the API's" in lines[2]


def test_check_wrong_secret_fails_naming_the_key_not_the_secret(emulator, tmp_path):
    wrong = base64.b64encode(b"not-the-secret-at-all-0123456789").decode()
    config = config_for(emulator, tmp_path, source={"secret_key": wrong})
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    api_line = next(line for line in result.stdout.splitlines() if " api " in f" {line} ")
    assert api_line.startswith("FAIL") and emulator.options.access_key in api_line
    assert wrong not in result.stdout + result.stderr


def test_check_unreachable_sink_fails(emulator, tmp_path):
    hec = {
        "type": "splunk_hec",
        "name": "hec",
        "url": f"http://127.0.0.1:{free_port()}",
        "token": "t0ken-value",
    }
    config = config_for(emulator, tmp_path, sinks=[hec])
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert any(line.startswith("FAIL  sink hec") for line in result.stdout.splitlines()), result.stdout
    assert "t0ken-value" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_exits_2_naming_the_key(tmp_path, command):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[source]\naccess_key = "a"\nsecret_key = "c2VjcmV0"\n'
        '[streams]\npoll_interval = "soon"\n'
        '[[sinks]]\ntype = "stdout"\n'
    )
    result = run_cli(command, "--config", str(config))
    assert result.returncode == 2
    assert "streams.poll_interval" in result.stdout + result.stderr


def test_missing_config_file_exits_2(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "cannot read config file" in result.stderr


def test_corrupt_checkpoint_exits_2_in_one_line_with_the_choices(emulator, tmp_path):
    """A file run cannot use is a configuration problem (exit 2: systemd and the backfill
    Job do not retry it), found by run and by check alike."""
    config = config_for(emulator, tmp_path)
    checkpoint = tmp_path / "state" / "checkpoints.db"
    checkpoint.parent.mkdir()
    checkpoint.write_text("{ not json")
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert str(checkpoint) in result.stderr and ".bak" in result.stderr
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 2
    failed = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "checkpoint.path" in failed[0] and str(checkpoint) in failed[0]
    assert checkpoint.read_text() == "{ not json", "the evidence is left alone"


def start_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=err, stdin=subprocess.DEVNULL)


def test_sigterm_drains_saves_and_exits_0(emulator, tmp_path):
    config = config_for(emulator, tmp_path)
    out = tmp_path / "out.jsonl"
    log = tmp_path / "log"
    proc = start_run(config, log)
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 0, 30, "first events")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_bytes()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"checkpoints saved" in err
    assert (tmp_path / "state" / "checkpoints.db").exists()
    assert oct((tmp_path / "state" / "checkpoints.db").stat().st_mode & 0o777) == "0o600"


def test_second_signal_exits_at_once(emulator, tmp_path):
    # A sink that never answers keeps the first shutdown waiting on its flush.
    blackhole = {"type": "http", "name": "slow", "url": f"http://127.0.0.1:{free_port()}/x", "timeout": "60s"}
    config = config_for(emulator, tmp_path, sinks=[blackhole], engine={"shutdown_timeout": "60s"})
    log = tmp_path / "log"
    proc = start_run(config, log)
    try:
        wait_until(lambda: b"first poll succeeded" in log.read_bytes(), 30, "running")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: b"stopping: flushing" in log.read_bytes(), 10, "the first signal handled")
        proc.send_signal(signal.SIGTERM)  # unix signals do not queue: the second goes once the first is seen
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1


def test_demo_prints_events_and_stops_cleanly(tmp_path):
    api, metrics = free_port(), free_port()
    text = Path("config/demo.toml").read_text()
    text = text.replace("127.0.0.1:50551", f"127.0.0.1:{api}").replace(
        "127.0.0.1:9464", f"127.0.0.1:{metrics}"
    )
    config = tmp_path / "demo.toml"
    config.write_text(text)
    env = {**os.environ, "AUDITSTREAM_DEMO_STATE": str(tmp_path / "state")}
    err_path = tmp_path / "demo.err"
    with err_path.open("wb") as err_file:  # a file, not a pipe nobody reads: the demo never blocks on it
        proc = subprocess.Popen(
            [*CLI, "demo", "--config", str(config)], stdout=subprocess.PIPE, stderr=err_file, env=env
        )
    stdout = proc.stdout
    assert stdout is not None
    lines: list[bytes] = []

    def read_lines() -> None:  # in a thread: waiting for lines keeps its deadline if none comes
        for line in stdout:
            lines.append(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(lines) >= 5, 60, "five events")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    err = err_path.read_bytes()
    assert proc.returncode == 0, err.decode()[-2000:]
    events = [orjson.loads(line) for line in lines]
    assert all({"logType", "id", "timestamp"} <= set(event) for event in events)
    assert DEMO_SECRET_KEY not in err.decode()


def test_a_backfill_into_a_file_loads_no_http_client_library():
    """aiohttp is the largest library of the sinks (9 MB of RSS and a tenth of a second of
    start-up): only HTTP sinks and the metrics server need it, and a backfill's peak RSS has
    a 150 MB target (BENCHMARKS.md)."""
    code = (
        "import sys, auditstream.cli, auditstream.engine.backfill, auditstream.engine.engine, "
        "auditstream.sinks.file, auditstream.sinks.registry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
