"""The commands as a user runs them: exit codes, one-line errors, signals, the demo."""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import socket
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
    result = run_cli("check", "--config", str(config_for(emulator, tmp_path, streams={"overlap": "5m"})))
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


def test_check_says_what_an_overlap_below_the_clock_bound_risks_and_passes(emulator, tmp_path):
    result = run_cli("check", "--config", str(config_for(emulator, tmp_path, streams={"overlap": "30s"})))
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert warning.split()[:2] == ["WARN", "streams"] and "overlap 30s" in warning and "lost" in warning


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


# -- one vocabulary of times: help, errors and README say it the same way ---------------------

MOMENT_FORMS = "2024-05-01 (midnight UTC) or 2024-05-01T12:00:00Z"  # config.MOMENT_FORMS, spelled out


def backfill_usage(config: Path, *args: str) -> str:
    result = run_cli("backfill", "--config", str(config), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    return line


def test_backfill_errors_suggest_only_what_backfill_accepts(emulator, tmp_path):
    """ "now" is suggested where it is accepted (--to) and nowhere else (--from); a --from in
    the future is about --from, not --to. Each hint names the one set of forms."""
    config = config_for(emulator, tmp_path)
    next_year = (dt.datetime.now(dt.UTC) + dt.timedelta(days=365)).strftime("%Y-%m-%d")
    bad_from = backfill_usage(config, "--from", "yesterday")
    assert "now" not in bad_from and MOMENT_FORMS in bad_from, bad_from
    from_now = backfill_usage(config, "--from", "now")
    assert "a backfill exports the past" in from_now and MOMENT_FORMS in from_now, from_now
    assert "use now" not in from_now
    future_from = backfill_usage(config, "--from", next_year)
    assert "--to" not in future_from and "give a --from before now" in future_from, future_from
    bad_to = backfill_usage(config, "--from", "2024-05-01", "--to", "tomorrow")
    assert f"use now, {MOMENT_FORMS}" in bad_to, bad_to
    future_to = backfill_usage(config, "--from", "2024-05-01", "--to", next_year)
    assert "use --to now" in future_to, future_to


def test_backfill_to_now_is_accepted_and_is_the_default(emulator, tmp_path):
    """--help says "default: now" and the checkpoint is named ...-now.db: --to now works."""
    config = config_for(emulator, tmp_path)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    result = run_cli("backfill", "--config", str(config), "--from", since, "--to", "now", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    stamp = since.replace("-", "") + "T000000Z"
    assert (tmp_path / "state" / f"backfill-{stamp}-now.db").exists()
    assert "backfill complete" in result.stderr
    help_text = " ".join(run_cli("backfill", "--help").stdout.split())
    assert f"--from DATE where the export starts: {MOMENT_FORMS}" in help_text, help_text
    assert f"--to DATE where it ends: now, {MOMENT_FORMS} (default: now" in help_text, help_text


def test_start_at_errors_use_the_same_vocabulary(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[source]\naccess_key = "a"\nsecret_key = "c2VjcmV0"\n'
        '[streams]\nstart_at = "yesterday"\n'
        '[[sinks]]\ntype = "stdout"\n'
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert f"streams.start_at: 'yesterday' is not a date or time; use now, {MOMENT_FORMS}" in result.stdout


def test_every_unset_variable_is_named_with_its_file_at_once(tmp_path):
    config = tmp_path / "env.toml"
    config.write_text(
        '[source]\naccess_key = "${AUDITSTREAM_TEST_UNSET_KEY}"\n'
        'secret_key = "${AUDITSTREAM_TEST_UNSET_SECRET}"\n'
        '[[sinks]]\ntype = "stdout"\n'
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    for line, key, name in zip(
        lines,
        ["access_key", "secret_key"],
        ["AUDITSTREAM_TEST_UNSET_KEY", "AUDITSTREAM_TEST_UNSET_SECRET"],
        strict=True,
    ):
        assert line.startswith(
            f"auditstream: {config}: source.{key}: environment variable {name} is not set"
        ), line
        assert "Environment=" in line and f"${{{name}:-" in line, "what to do about it"
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 2
    failed = [line for line in checked.stdout.splitlines() if line.startswith("FAIL  config")]
    assert len(failed) == 2 and all(str(config) in line for line in failed), checked.stdout


def test_check_with_the_api_unreachable_says_what_to_look_at_and_nothing_else(emulator, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    # overlap above the clock bound, or check rightly warns (test_check_says_what_an_overlap_...)
    config = config_for(emulator, tmp_path, source={"endpoint": endpoint}, streams={"overlap": "5m"})
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    (api_line,) = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["api"]]
    assert api_line.startswith("FAIL") and "Connection refused" in api_line
    assert f"check [source] endpoint ({endpoint})" in api_line and "DNS" in api_line and "proxy" in api_line
    assert result.stderr == "", "no log line between (or under) the table's rows"
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ok", "ok", "FAIL", "ok", "ok"]


@pytest.mark.parametrize(("variable", "what"), [("API", "StrongDM API emulator"), ("METRICS", "/metrics")])
def test_a_taken_demo_port_is_named_with_the_way_to_move_it(tmp_path, variable, what):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"API": f"127.0.0.1:{free_port()}", "METRICS": f"127.0.0.1:{free_port()}"}
        ports[variable] = f"127.0.0.1:{port}"
        env = {
            **os.environ,
            "AUDITSTREAM_DEMO_STATE": str(tmp_path / "state"),
            "AUDITSTREAM_DEMO_API": ports["API"],
            "AUDITSTREAM_DEMO_METRICS": ports["METRICS"],
        }
        result = subprocess.run(
            [*CLI, "demo", "--config", "config/demo.toml"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line and f"the demo's {what}" in line, line
    assert f"AUDITSTREAM_DEMO_{variable}=127.0.0.1:{port + 1} make demo" in line, line
    assert "GRPC_VERBOSITY" not in line and "add_port" not in result.stderr


def test_backfill_progress_into_a_pipe_is_whole_lines_without_terminal_codes(emulator, tmp_path):
    config = config_for(emulator, tmp_path)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    result = run_cli("backfill", "--config", str(config), "--from", since, "--progress", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    progress = [line for line in result.stderr.splitlines() if "ETA" in line]
    assert progress, "--progress shows progress when stderr is not a terminal"
    assert "\x1b" not in result.stderr and "\r" not in result.stderr, repr(result.stderr[-500:])


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
