"""Replay chunks per second: what streaming session content costs.

    .venv/bin/python -m bench.bench_replays [--records 2000] [--rounds 3]

Two measurements over the emulator's replays (SSH shells and ``kubectl exec`` sessions with
coloured prompts, typed commands, output, progress bars; a share of them with planted
credentials, so masking has work to do):

- **per chunk, CPU**: the daemon's own work for one chunk, in this process: terminal
  decoding and masking (``ReplayAssembler`` with a session's ``SessionMasker``), the chunk
  event (``engine.replays.chunk_event``) and its JSON line; best of ``--rounds`` passes of
  CPU time (``time.process_time``). Plain and encrypted sessions alike (decryption is
  ``bench_decrypt``'s).
- **end to end**: ``auditstream backfill --streams replays`` against the emulator on
  loopback (no added latency), into a file sink: chunks delivered per wall-clock second,
  listing the sessions, fetching every chunk through ``Replays.List`` and checkpointing.

A benchmark, not a test: it prints a table and never fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from auditstream.emulator import EmulatorOptions, running_emulator
from auditstream.engine.replays import RawChunk, chunk_event, session_fields
from auditstream.formats.masking import Masker, SessionMasker
from auditstream.formats.replaytext import ReplayAssembler
from tests.e2e.support import daemon_config_document, write_toml


def cpu_per_chunk(sessions: list[list[list[tuple[bytes, int]]]], rounds: int) -> tuple[float, int, int]:
    """(best CPU seconds for all chunks, chunks, terminal bytes)."""
    masker = Masker()
    base = {"formatVersion": "auditstream/1", "queryId": "q", "accountEmail": "a@example.com"}
    chunks = sum(len(s) for s in sessions)
    size = sum(len(data) for s in sessions for chunk in s for data, _ in chunk)
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for session in sessions:
            assembler = ReplayAssembler(SessionMasker(masker))
            raw = {}
            ready = []
            for index, events in enumerate(session):
                raw[index] = RawChunk(events)
                ready += assembler.add(index, [data for data, _ in events])
            ready += assembler.finish()
            for text in ready:
                event = chunk_event(session_fields(base), "replays", "q", text, raw.pop(text.index), 0)
                orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        best = min(best, time.process_time() - started)
    return best, chunks, size


def end_to_end(emu_options: EmulatorOptions) -> tuple[float, int, int]:
    """(wall seconds of the backfill, chunk events delivered, sessions replayed)."""
    with running_emulator(emu_options) as emu, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        doc = daemon_config_document(emu.address, emu.options.access_key, emu.options.secret_key, path)
        doc["streams"]["include"] = ["replays"]
        doc["normalize"] = {"log_private_key_file": str(_key(path, emu.log_private_key_pem))}
        config = write_toml(path / "config.toml", doc)
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).strftime("%Y-%m-%d")
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "auditstream.cli", "backfill", "--config", str(config), "--from", since],
            check=True,
            capture_output=True,
        )
        seconds = time.monotonic() - started
        lines = (path / "out.jsonl").read_bytes().splitlines()
        delivered = sum(1 for line in lines if b'"chunkId":' in line)
        sessions = len({orjson.loads(line)["queryUUID"] for line in lines})
    return seconds, delivered, sessions


def _key(path: Path, pem: bytes) -> Path:
    key = path / "log-key.pem"
    key.write_bytes(pem)
    key.chmod(0o600)
    return key


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000, help="queries in the emulator's data set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--latency-ms", type=float, default=100.0, help="per call, for the second end-to-end run"
    )
    args = parser.parse_args()
    options = EmulatorOptions(seed=7, records=args.records, secret_fraction=0.05, encrypted_fraction=0.2)
    with running_emulator(options) as emu:
        ids = sorted(emu.replayable_query_ids())
        sessions = [emu.replay_events(q) for q in ids if emu.replay_commands(q)]
    seconds, chunks, size = cpu_per_chunk(sessions, args.rounds)
    wall, delivered, replayed = end_to_end(options)
    remote = options.replace(records=max(200, args.records // 4), latency_ms=args.latency_ms)
    remote_wall, remote_delivered, remote_sessions = end_to_end(remote)
    print(f"{len(sessions)} terminal sessions, {chunks} chunks, {size / 1e6:.1f} MB of terminal output\n")
    print("| measurement | chunks/s | µs per chunk | sessions/s |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| decode + mask + event + JSON (CPU, one core) | {chunks / seconds:,.0f} | "
        f"{seconds / chunks * 1e6:,.1f} | - |"
    )
    print(
        f"| backfill of replays, loopback (wall) | {delivered / wall:,.0f} | "
        f"{wall / max(delivered, 1) * 1e6:,.1f} | {replayed / wall:,.1f} |"
    )
    print(
        f"| backfill of replays, {args.latency_ms:.0f} ms per call, {remote.records} queries (wall) "
        f"| {remote_delivered / remote_wall:,.0f} | {remote_wall / max(remote_delivered, 1) * 1e6:,.1f} "
        f"| {remote_sessions / remote_wall:,.1f} |"
    )


if __name__ == "__main__":
    main()
