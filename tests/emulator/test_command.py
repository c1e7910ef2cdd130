"""``python -m auditstream.emulator`` as a process: announce, serve, stop on SIGTERM, write truth."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from auditstream.emulator import (
    DEMO_ACCESS_KEY,
    DEMO_SECRET_KEY,
    Emulator,
    EmulatorOptions,
    make_demo_credentials,
)
from auditstream.emulator.command import add_arguments, options_from_args
from auditstream.emulator.options import ResetAt, SecretLogsTimeFilter
from auditstream.emulator.truthfile import read_truth_file
from auditstream.sdm.registry import SERVED_STREAM_NAMES
from tests.helpers import free_port

from .oracle import decrypt_body, load_private_key
from .rawclient import RawClient, build_request, signed_metadata

REPO = Path(__file__).resolve().parents[2]


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auditstream.emulator", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


async def test_serves_until_sigterm_and_writes_the_truth_file(tmp_path: Path) -> None:
    port = free_port()
    truth_path = tmp_path / "truth.jsonl"
    proc = await spawn(
        "--listen", f"127.0.0.1:{port}", "--records", "60", "--seed", "5", "--live", "50",
        "--truth-file", str(truth_path), "--access-key", DEMO_ACCESS_KEY, "--secret-key", DEMO_SECRET_KEY,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.decode().strip() == f"listening on 127.0.0.1:{port}"
        stand_in: Any = SimpleNamespace(address=f"127.0.0.1:{port}", options=EmulatorOptions())
        async with RawClient(stand_in) as client:
            listed = (await client.list_all("activities", limit=25)).keys()
            roles = (await client.list_all("roles_history")).keys()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, stderr.decode()
    truth = read_truth_file(truth_path)
    assert set(truth) == set(SERVED_STREAM_NAMES)  # replays are served through queries
    assert set(listed) <= set(truth["activities"]) and len(listed) >= 60
    assert set(roles) <= set(truth["roles_history"]) and len(truth["roles_history"]) >= 6
    assert all(isinstance(t, int) and t > 0 for t in truth["queries"].values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--secret-key", "not base64!!"], "not valid base64"),
        (["--listen", "nohostport"], "HOST:PORT"),
        (["--short-pages", "1.5"], "probability"),
        (["--order", "sideways"], "invalid choice"),
    ],
)
async def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    proc = await spawn(*args)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert message in stderr.decode()
    assert not stdout
    if args[0] == "--secret-key":
        assert args[1] not in stderr.decode()  # never echo a secret, even a malformed one


async def test_demo_credentials_are_accepted_by_default() -> None:
    """Started without --access-key/--secret-key, the emulator answers a call signed with the
    demo credentials, and refuses one signed with another secret."""
    assert make_demo_credentials() == (DEMO_ACCESS_KEY, DEMO_SECRET_KEY)
    port = free_port()
    proc = await spawn("--listen", f"127.0.0.1:{port}", "--records", "5", "--streams", "activities")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.decode().strip() == f"listening on 127.0.0.1:{port}"
        demo = SimpleNamespace(access_key=DEMO_ACCESS_KEY, secret=base64.b64decode(DEMO_SECRET_KEY))
        async with RawClient(SimpleNamespace(address=f"127.0.0.1:{port}", options=demo)) as client:
            listed = await client.list_all("activities")
            wrong = build_request("activities")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.call(
                    "activities", wrong, signed_metadata(client.emu, "activities", wrong, b"x" * 32)
                )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=30)
    assert len(listed.records) == 5
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_taken_port_fails_to_start_instead_of_sharing_it() -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        emulator = Emulator(EmulatorOptions(port=port, records=0, streams=()))
        with pytest.raises(OSError, match="cannot listen"):
            await emulator.start()
        await emulator.stop()
        proc = await spawn("--listen", f"127.0.0.1:{port}", "--records", "0", "--streams", "")
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1 and b"cannot listen" in stderr


def test_flags_of_secrets_encryption_and_secret_logs() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = options_from_args(parser.parse_args([]))
    assert defaults.secret_fraction == 0.0 and defaults.encrypted_fraction == 0.0
    assert defaults.log_key_file is None and defaults.secret_logs_time_filter is SecretLogsTimeFilter.ACCEPTED
    args = parser.parse_args(
        ["--secret-fraction", "0.2", "--encrypted-fraction", "0.1", "--log-key-file", "/keys/org.pem",
         "--secret-logs-time-filter", "refused"]
    )  # fmt: skip
    options = options_from_args(args)
    assert (options.secret_fraction, options.encrypted_fraction) == (0.2, 0.1)
    assert options.log_key_file == "/keys/org.pem"
    assert options.secret_logs_time_filter is SecretLogsTimeFilter.REFUSED
    assert defaults.reset_at is ResetAt.BUCKET
    assert options_from_args(parser.parse_args(["--reset-at", "next-minute"])).reset_at is ResetAt.NEXT_MINUTE
    for bad in (
        ["--reset-at", "hourly"],
        ["--secret-fraction", "2"],
        ["--encrypted-fraction", "-0.1"],
        ["--secret-logs-time-filter", "x"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


async def test_a_key_file_is_made_for_the_daemon_and_a_bad_one_exits_2(tmp_path: Path) -> None:
    key_path = tmp_path / "org.pem"
    port = free_port()
    proc = await spawn(
        "--listen", f"127.0.0.1:{port}", "--records", "40", "--streams", "queries",
        "--encrypted-fraction", "1", "--log-key-file", str(key_path),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.decode().strip() == f"listening on 127.0.0.1:{port}"
        stand_in: Any = SimpleNamespace(address=f"127.0.0.1:{port}", options=EmulatorOptions())
        async with RawClient(stand_in) as client:
            queries = (await client.list_all("queries")).records
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=30)
    assert queries and all(q.encrypted for q in queries)
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    key = load_private_key(key_path.read_bytes())
    assert all(decrypt_body(key, q) for q in queries)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    proc = await spawn("--records", "5", "--encrypted-fraction", "0.5", "--log-key-file", str(bad))
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2 and b"bad.pem" in stderr and not stdout
