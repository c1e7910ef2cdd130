"""What we ship from a session: decrypted, masked, replayed, secret access audited.

Real ``auditstream backfill`` processes against the emulator playing StrongDM's real formats:
queries encrypted to the organisation's key (RSA-OAEP-wrapped AES-CBC), replays of SSH and
``kubectl exec`` sessions with ANSI output, credentials of every rule family planted in
bodies, captures and terminals, and ``ManagedSecrets.Logs``. Outputs are searched for every
planted secret, in clear and as base64 at every alignment.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditstream.emulator import Emulator, EmulatorOptions, QueriesTime, running_emulator
from auditstream.emulator.crypto import generate_private_key, private_key_pem
from auditstream.engine.checkpoint import CheckpointStore
from auditstream.formats.masking import Masker, SessionMasker
from auditstream.formats.replaytext import ReplayAssembler
from tests.e2e.support import daemon_config, daemon_config_document, live_engine, write_toml
from tests.helpers import async_wait_until, wait_until

STREAMS = ["activities", "queries", "replays", "managed_secret_logs"]
MASKER = Masker()


def _config(emu: Any, tmp_path: Path, *, key: Path | None, streams: list[str], **source: Any) -> Path:
    doc = daemon_config_document(emu.address, emu.options.access_key, emu.options.secret_key, tmp_path)
    doc["streams"]["include"] = streams
    doc["source"].update(source)
    doc["sinks"] = [
        {"type": "file", "name": "out", "path": str(tmp_path / "out.jsonl"), "fsync": False},
        {"type": "file", "name": "cef", "format": "cef", "path": str(tmp_path / "out.cef"), "fsync": False},
    ]
    doc["normalize"] = {"mask_secrets": True}
    if key is not None:
        doc["normalize"]["log_private_key_file"] = str(key)
    return write_toml(tmp_path / "config.toml", doc)


def _key_file(tmp_path: Path, pem: bytes, name: str = "log-key.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def _backfill(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).strftime("%Y-%m-%d")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditstream.cli",
            "backfill",
            "--config",
            str(config),
            "--from",
            since,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def _events(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def _base64_forms(secret: str) -> list[str]:
    """The secret's bytes as they appear inside any base64 text, whatever its offset: the
    characters that depend only on the secret, for each of the three alignments."""
    raw = secret.encode()
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = -(-offset * 4 // 3) + (1 if offset else 0)  # skip characters mixing in the prefix
        stable = encoded[start:][: (len(raw) * 4) // 3 - 4]
        if len(stable) >= 8:
            forms.append(stable)
    return forms


def _leaks(texts: dict[str, str], secrets: set[str]) -> list[tuple[str, str, str]]:
    found = []
    for secret in secrets:
        for where, text in texts.items():
            if secret in text:
                found.append((where, "clear", secret))
            found += [(where, "base64", secret) for form in _base64_forms(secret) if form in text]
    return found


def _outputs(tmp_path: Path, stdout: bytes, stderr: bytes) -> dict[str, str]:
    texts = {"stdout": stdout.decode(errors="replace"), "stderr": stderr.decode(errors="replace")}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".pem" and path.name != "config.toml":
            texts[str(path.relative_to(tmp_path))] = path.read_bytes().decode(errors="replace")
    return texts


def _session_text(chunks: list[dict[str, Any]]) -> str:
    return "\n".join(c["text"] for c in sorted(chunks, key=lambda c: c["chunkId"]) if c.get("text"))


def _expected_text(emu: Any, query_id: str) -> str:
    """The session's terminal text as decoding and masking the emulator's own bytes gives it."""
    assembler = ReplayAssembler(SessionMasker(MASKER))
    chunks = emu.replay_events(query_id)
    out = []
    for index, events in enumerate(chunks):
        out += assembler.add(index, [data for data, _ in events])
    out += assembler.finish()
    return "\n".join(c.text for c in out if c.text)


@pytest.mark.slow
def test_a_backfill_ships_sessions_decrypted_masked_and_replayed_with_no_secret_anywhere(tmp_path):
    options = EmulatorOptions(seed=21, records=600, encrypted_fraction=0.3, secret_fraction=0.3)
    with running_emulator(options) as emu:
        key = _key_file(tmp_path, emu.log_private_key_pem)
        proc = _backfill(_config(emu, tmp_path, key=key, streams=STREAMS))
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        events = _events(tmp_path / "out.jsonl")
        by_stream = collections.defaultdict(list)
        for event in events:
            by_stream[event["logType"]].append(event)
        queries = {e["id"]: e for e in by_stream["queries"]}
        assert {key for key, _ in emu.truth("queries")} <= set(queries)
        assert {key for key, _ in emu.truth("managed_secret_logs")} <= {
            e["id"] for e in by_stream["managed_secret_logs"]
        }

        # every encrypted body decrypted: the emulator's plaintext, masked
        encrypted = {qid for qid in emu.encrypted_query_ids() if qid in queries}
        assert len(encrypted) > 20
        for qid in encrypted:
            event = queries[qid]
            assert event["decryption"] == "decrypted", event.get("decryptionError")
            assert event["queryBody"] == MASKER.mask(emu.encrypted_plaintext(qid))[0]

        # every replayable session's chunks, each once, and its typed commands in the text
        chunks = collections.defaultdict(list)
        for event in by_stream["replays"]:
            chunks[event["queryUUID"]].append(event)
        sessions = emu.replayable_query_ids()
        text_sessions = {qid for qid in sessions if emu.replay_commands(qid)}
        assert len(text_sessions) > 10 and text_sessions & encrypted, "plain and encrypted sessions"
        for qid in text_sessions:
            got = chunks[qid]
            assert sorted(c["chunkId"] for c in got) == list(range(len(emu.replay_events(qid))))
            text = _session_text(got)
            assert text == _expected_text(emu, qid)
            for command in emu.replay_commands(qid):
                assert MASKER.mask(command)[0] in text, (qid, command)
        rdp = sessions - text_sessions
        assert all(len(chunks[qid]) == 1 and chunks[qid][0]["chunkId"] is None for qid in rdp)

        secrets = emu.planted_secrets()
        assert len(secrets) > 50
        masked = [e for e in events if e.get("maskedSecrets")]
        assert masked and any(e["logType"] == "replays" and e.get("dataOmitted") for e in masked)
        leaks = _leaks(_outputs(tmp_path, stdout, stderr), secrets)
        assert not leaks, leaks[:5]


def test_sigkill_while_fetching_replays_then_resume_loses_no_chunk(tmp_path):
    options = EmulatorOptions(seed=22, records=400, latency_ms=15, encrypted_fraction=0.2)
    with running_emulator(options) as emu:
        key = _key_file(tmp_path, emu.log_private_key_pem)
        config = _config(emu, tmp_path, key=key, streams=["replays"], page_size=5)
        out = tmp_path / "out.jsonl"
        first = _backfill(config)
        wait_until(
            lambda: first.poll() is not None or sum(1 for e in _events(out) if e.get("chunkId")) > 30,
            120,
            "some replay chunks delivered",
        )
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        written_before = {e["id"] for e in _events(out)}
        before = len(_events(out))
        committed = _committed_keys(tmp_path / "state", "replays")
        second = _backfill(config)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err.decode()[-3000:]
        delivered = collections.Counter(e["id"] for e in _events(out))
        expected = set()
        for qid in emu.replayable_query_ids():
            if emu.replay_commands(qid):
                expected |= {f"{qid}#{i}" for i in range(len(emu.replay_events(qid)))}
            else:
                expected.add(qid)
        assert 0 < before < len(expected), "the first run was cut short in the middle of the replays"
        assert not expected - set(delivered), sorted(expected - set(delivered))[:5]
        assert set(delivered) <= expected
        # Sent again: what was written but not yet committed at the kill (the batches in flight,
        # and those acknowledged since the last group commit, [checkpoint] commit_interval).
        resent = {chunk for chunk, count in delivered.items() if count > 1}
        assert max(delivered.values()) <= 2
        assert not resent & committed, f"committed, yet sent again: {sorted(resent & committed)[:5]}"
        assert resent <= written_before - committed


def _committed_keys(state: Path, stream: str) -> set[str]:
    """The keys a stream's checkpoint (the backfill's) holds, as a restart reads them; read from
    a copy, so the restart finds the files as the kill left them."""
    (checkpoint,) = state.glob("backfill-*.db")
    copy = state.parent / "at-the-kill"
    copy.mkdir()
    for suffix in ("", "-wal"):
        if checkpoint.with_name(checkpoint.name + suffix).exists():
            shutil.copy(checkpoint.with_name(checkpoint.name + suffix), copy)
    return set(CheckpointStore(copy / checkpoint.name).load()[stream].delivered)


def test_a_wrong_key_and_a_corrupt_body_are_delivered_flagged_and_counted(tmp_path):
    options = EmulatorOptions(seed=23, records=200, encrypted_fraction=0.5)
    with running_emulator(options) as emu:
        wrong = _key_file(tmp_path, private_key_pem(generate_private_key()), "other-key.pem")
        proc = _backfill(_config(emu, tmp_path, key=wrong, streams=["queries", "replays"]))
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        events = _events(tmp_path / "out.jsonl")
        queries = {e["id"]: e for e in events if e["logType"] == "queries"}
        encrypted = {qid for qid in emu.encrypted_query_ids() if qid in queries}
        assert {key for key, _ in emu.truth("queries")} <= set(queries), "nothing dropped"
        assert encrypted
        for qid in encrypted:
            event = queries[qid]
            assert event["decryption"] == "failed"
            assert "wrong key" in event["decryptionError"]
            # as received: the base64 of IV + whole AES blocks, not the plaintext
            assert len(base64.b64decode(event["queryBody"])) % 16 == 0
            assert event["queryBody"] != emu.encrypted_plaintext(qid)
        undecrypted = [e for e in events if e["logType"] == "replays" and e.get("replayError")]
        assert undecrypted and all(e["text"] == "" for e in undecrypted)
    pem = wrong.read_text()
    body = pem.split("-----")[2].strip().splitlines()[3]
    assert body not in stdout.decode() + stderr.decode(), "key material never reaches the output"


def test_unreadable_or_invalid_key_file_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "config.toml"
    doc = daemon_config_document("127.0.0.1:1", "auth-x", base64.b64encode(b"k" * 32).decode(), tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    for key, expect in ((tmp_path / "absent.pem", "absent.pem"), (garbage, "garbage.pem")):
        doc["normalize"] = {"log_private_key_file": str(key)}
        write_toml(config, doc)
        for command in (["check"], ["run"], ["backfill", "--from", "2024-01-01", "--to", "2024-01-02"]):
            proc = subprocess.run(
                [sys.executable, "-m", "auditstream.cli", *command, "--config", str(config)],
                capture_output=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1"},
            )
            said = proc.stdout.decode() + proc.stderr.decode()  # check reports on stdout
            assert proc.returncode == 2, (command, said)
            problem = [line for line in said.splitlines() if "log_private_key_file" in line]
            assert len(problem) == 1 and expect in problem[0], said
            assert "bm90IGEga2V5" not in said


def test_secret_logs_are_complete_when_the_api_refuses_a_time_filter(tmp_path):
    options = EmulatorOptions(seed=24, records=3000, secret_logs_time_filter="refused")
    with running_emulator(options) as emu:
        proc = _backfill(_config(emu, tmp_path, key=None, streams=["managed_secret_logs"], page_size=50))
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        delivered = collections.Counter(e["id"] for e in _events(tmp_path / "out.jsonl"))
        truth = {key for key, _ in emu.truth("managed_secret_logs")}
    assert len(truth) > 100 and set(delivered) == truth
    assert all(n == 1 for n in delivered.values())
    assert stderr.decode().count("refuses a time filter") == 1, "said once"


def _expected_replay_keys(emu: Any) -> set[str]:
    keys: set[str] = set()
    for qid in emu.replayable_query_ids():
        chunks = len(emu.replay_events(qid)) if emu.replay_commands(qid) else 0
        keys |= {f"{qid}#{i}" for i in range(chunks)} if chunks else {qid}
    return keys


@pytest.mark.parametrize("queries_time", [QueriesTime.START, QueriesTime.COMPLETED])
async def test_live_sessions_are_replayed_once_they_complete_whichever_time_the_filter_uses(
    tmp_path, queries_time
):
    """Sessions open at start and sessions opened live: each one's chunks come once its
    completion record is listed, even when the Queries filter applies to the start time (the
    completion then lies far behind the cursor, and only the long-query re-check finds it)."""
    options = EmulatorOptions(
        seed=25,
        records=60,
        live=4,
        live_for=6,
        live_long_session_fraction=0.6,
        live_session_seconds=(1.0, 5.0),
        long_sessions=4,
        long_session_close_within=6,
        queries_time=queries_time,
    )
    async with Emulator(options) as emu:
        config = daemon_config(emu, tmp_path, streams={"include": ["replays"]})
        engine = live_engine(config)
        task = asyncio.create_task(engine.run())
        out = tmp_path / "out.jsonl"

        def complete() -> bool:
            if task.done() or not emu.live_finished or emu.store.pending_count():
                return task.done()
            return _expected_replay_keys(emu) <= {e["id"] for e in _events(out)}

        try:
            await async_wait_until(complete, 90, "every session's chunks delivered")
            assert not task.done(), task
        finally:
            engine.stop.set()
            await asyncio.wait_for(task, timeout=30)
        delivered = collections.Counter(e["id"] for e in _events(out))
        expected = _expected_replay_keys(emu)
    late = {qid for qid in emu.replayable_query_ids() if qid in {k.split("#")[0] for k in expected}}
    assert len(late) >= 4, "sessions completed while the daemon ran"
    assert set(delivered) == expected
    assert all(n == 1 for n in delivered.values()), "no chunk twice"
