"""What decrypting StrongDM's encrypted query logs costs, per record and per replay chunk.

    .venv/bin/python -m bench.bench_decrypt [--records 2000] [--rounds 5] [--chunk-events 100]

Records are ``queries`` events exactly as the daemon makes them from encrypted records
(``to_event``), encrypted by the emulator's ``QueryEncryptor``; the measured call is
``decrypt_query_event``. Two bodies: a SQL statement (~120 bytes) and an SSH session's
capture JSON (~300 bytes, parsed into the capture). Two key situations:

- distinct keys: every record has its own query key and the decryptor starts each pass
  with an empty cache, so every record pays one RSA private-key operation: the worst
  case, and what a stream of short datasource queries costs;
- shared key: all records share one key, as a session's start and completion records and
  its replay chunks do, so the RSA operation is paid once and the cache answers the rest.

Replay chunks are an encrypted session's ``data`` (``--chunk-events`` events of 16 to 512
bytes of terminal output each) through ``QueryDecryptor.replay_events`` with the session's
key (cached). Each cell is CPU time of this process (``time.process_time``), best of
``--rounds`` passes, on one core; a benchmark, not a test: it prints and never fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format

from auditstream.emulator.crypto import QueryEncryptor, generate_private_key
from auditstream.formats.decryption import QueryDecryptor, decrypt_query_event
from auditstream.formats.events import to_event
from auditstream.sdm.registry import STREAMS

SQL = "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = {n}"
CAPTURE = {
    "type": "shell",
    "width": 120,
    "height": 40,
    "command": "",
    "clientCommand": "ssh bastion-{n}",
    "env": {"TERM": "xterm-256color", "LANG": "en_US.UTF-8"},
    "impersonationGroups": [],
}


def _events(enc: QueryEncryptor, n: int, body: str, shared: bool) -> list[dict[str, Any]]:
    spec = STREAMS["queries"]
    shared_key = enc.new_query_key()
    events = []
    for i in range(n):
        aes_key, query_key = shared_key if shared else enc.new_query_key()
        record = json_format.ParseDict(
            {
                "id": f"q-{i:09d}",
                "timestamp": "2024-05-01T12:34:56.123456789Z",
                "queryCategory": "ssh" if body.startswith("{") else "datasources",
                "encrypted": True,
                "queryKey": query_key,
                "queryBody": enc.encrypt_body(aes_key, body.replace("{n}", str(i))),
            },
            spec.record_class(),
        )
        events.append(to_event(spec, record))
    return events


def _best_seconds(run: Callable[[], None], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def measure_records(
    decryptor_for: Callable[[], QueryDecryptor], events: list[dict[str, Any]], rounds: int
) -> float:
    """Seconds per record, with a fresh decryptor (empty cache) for each pass."""

    def run() -> None:
        decryptor = decryptor_for()
        for event in events:
            if decrypt_query_event(event, decryptor).get("decryption") != "decrypted":
                raise RuntimeError("a benchmark record did not decrypt")

    return _best_seconds(run, rounds) / len(events)


def measure_chunks(
    enc: QueryEncryptor, decryptor: QueryDecryptor, chunks: int, events: int, rounds: int
) -> float:
    """Seconds per replay chunk of ``events`` events, the session's key already opened."""
    rng = random.Random(1)
    aes_key, query_key = enc.new_query_key()
    data = [
        enc.encrypt_replay_events(
            aes_key, [(rng.randbytes(rng.randint(16, 512)), rng.randint(0, 2000)) for _ in range(events)]
        )
        for _ in range(chunks)
    ]
    decryptor.open_key(query_key)

    def run() -> None:
        for chunk in data:
            decryptor.replay_events(query_key, chunk)

    return _best_seconds(run, rounds) / chunks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000, help="records per case (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="passes per case; the best is kept (default 5)")
    parser.add_argument("--chunks", type=int, default=200, help="replay chunks (default 200)")
    parser.add_argument("--chunk-events", type=int, default=100, help="events per replay chunk (default 100)")
    args = parser.parse_args(argv)

    capture = json.dumps(CAPTURE)
    rows: list[tuple[str, float]] = []
    replay: tuple[str, float] | None = None
    for bits in (2048, 4096):
        key = generate_private_key(bits)
        enc = QueryEncryptor(key.public_key(), random.Random(bits))

        def fresh(key: Any = key) -> QueryDecryptor:
            return QueryDecryptor(key)

        for body_name, body in (("SQL", SQL), ("capture JSON", capture)):
            for shared in (False, True):
                events = _events(enc, args.records, body, shared)
                label = (
                    f"query record, {body_name}, {'shared key' if shared else 'distinct keys'}, RSA-{bits}"
                )
                rows.append((label, measure_records(fresh, events, args.rounds)))
        if replay is None:  # the key is opened once per session: its size hardly matters here
            seconds = measure_chunks(enc, fresh(), args.chunks, args.chunk_events, args.rounds)
            replay = (f"replay chunk, {args.chunk_events} events of 16-512 B, session key cached", seconds)
    assert replay is not None
    rows.append(replay)

    print("| case | µs per item | items per CPU second |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds * 1e6:,.1f} | {1 / seconds:,.0f} |")
    # After the table: bench/__main__ keeps output that starts with a table as Markdown.
    print(
        f"\nCPU time on one core, best of {args.rounds} passes over {args.records} records "
        f"({args.chunks} chunks for the replay row); distinct keys: one RSA operation per record."
    )


if __name__ == "__main__":
    main()
