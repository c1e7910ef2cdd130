"""Normalize + encode throughput per format, in records per second on one core.

    .venv/bin/python -m bench.bench_formats [--records 4000] [--rounds 5]

(from the repository root: the history mix reuses the samples in tests/formats/samples.py).

Three record sets are measured: activities, queries (a mix of SQL completions, an SSH start
and its completion) and a history mix (one record of each of the 26 history streams, in
turn); a fourth, ``activities*``, gives every record its own actor, entities and address,
more of them than the caches hold, to show the cost when no cache helps. Records are
distinct protobuf messages with distinct ids, nanosecond timestamps a few milliseconds apart
and a handful of recurring tag sets, as a real page of results has, so the per-second and
per-tag-set caches see realistic hit rates rather than one record repeated.

Each cell is records per CPU second of this process (``time.process_time``), best of
``--rounds`` passes over the set: the machine is shared, and wall-clock rates swing with
whatever else runs, while CPU time is what one core spends on our code (the loop is
single-threaded, so this is single-core throughput). Even so, other load on the machine
(cache and hypervisor contention) can cost 30% or more: run it a few times and read the best.
"normalize" is ``to_event`` alone; "json"/"cef"/"ocsf"/"ecs" are ``to_event`` followed by
the sink encoder from ``make_encoder``, once per record, as the daemon does. A second table
gives microseconds per record of the encoders alone (events normalized beforehand), which is
what choosing a format costs. A benchmark, not a test: it prints numbers and never fails.

To compare two versions independently of load, count machine instructions instead of time:
run a small script doing the same loop under ``valgrind --tool=callgrind`` twice (with and
without the loop, same setup) and divide the difference by the record count; with
``PYTHONHASHSEED=0`` the count repeats exactly. docs/formats.md lists the counts measured
for the current code.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from auditstream.formats import Format, make_encoder, to_event
from auditstream.formats.protovalues import rfc3339
from auditstream.sdm.registry import STREAMS, StreamKind, StreamSpec

TARGETS = {"json": 150_000, "cef": 100_000}
FORMATS: tuple[Format, ...] = ("json", "cef", "ocsf", "ecs")  # ocsf and ecs: no target of their own
DISTINCT_RECORDS = 3 * 4096
BASE_SECONDS = 1_714_566_896
TAG_SETS = [
    {"pairs": [{"name": "env", "value": "prod"}, {"name": "team", "value": "data"}]},
    {"pairs": [{"name": "env", "value": "staging"}]},
    {"pairs": []},
    {
        "pairs": [
            {"name": "env", "value": "prod"},
            {"name": "pci", "value": "true"},
            {"name": "owner", "value": "sre"},
        ]
    },
]
VERBS = ["user logged into the local client", "datasource updated", "user deleted", "access rules updated"]


def _ts(i: int, step_ms: int = 7) -> str:
    """The i-th record's time: ~7 ms apart, with nanosecond digits."""
    total_ns = BASE_SECONDS * 1_000_000_000 + i * step_ms * 1_000_000 + (i * 7919) % 1_000_000
    return rfc3339(*divmod(total_ns, 1_000_000_000))


def _activities(n: int, distinct: bool = False) -> list[Message]:
    """Activities; ``distinct``: every record with its own actor, entities and address."""
    cls = STREAMS["activities"].record_class
    records = []
    for i in range(n):
        j = i if distinct else 0  # what repeats in the usual set varies per record here
        records.append(
            json_format.ParseDict(
                {
                    "id": f"0CEGCEGCEGCEGCEGCEG{i:09d}",
                    "verb": VERBS[i % len(VERBS)],
                    "description": f"Alice Glick (alice@example.com) updated datasource prod-db-{i % 50}",
                    "completedAt": _ts(i),
                    "entities": [
                        {
                            "id": f"rs-{i % 50 + j:016x}",
                            "type": "datasource",
                            "name": f"prod-db-{i % 50 + j}",
                        },
                        {
                            "id": f"a-0abcdabcd{j:07d}",
                            "type": "user",
                            "name": f"Bob Example {j}" if distinct else "Bob Example",
                            "email": f"bob{j}@example.com" if distinct else "bob@example.com",
                        },
                    ],
                    "ipAddress": f"10.{j // 62500}.{j // 250 % 250}.{j % 250}"
                    if distinct
                    else f"203.0.113.{i % 250}",
                    "actor": {
                        "id": f"a-0abcdabcd{j + 1:07d}",
                        "email": f"alice{j}@example.com" if distinct else "alice.glick@example.com",
                        "firstName": "Alice",
                        "lastName": f"Glick {j}" if distinct else "Glick",
                        "activityExternalId": f"e-{j:07x}",
                    },
                    "userAgent": "strongdm-sdk-python/18.4.0",
                },
                cls(),
            )
        )
    return records


def _queries(n: int) -> list[Message]:
    cls = STREAMS["queries"].record_class
    records = []
    for i in range(n):
        kind = i % 10
        record: dict[str, Any] = {
            "id": f"s1Uj1aKxKI4pbWQSNnqS{i:07d}",
            "accountId": f"a-{i % 40:016x}",
            "resourceId": f"rs-{i % 50:016x}",
            "queryBody": f"SELECT id, email FROM users WHERE id = {i} AND created_at > now() - interval '1d'",
            "duration": f"0.{(i * 7919) % 1_000_000_000:09d}s",
            "queryHash": f"{i * 2654435761 % (1 << 160):040x}",
            "timestamp": _ts(i),
            "completedAt": _ts(i + 3),
            "egressNodeId": "n-1234abcd5678ef90",
            "recordCount": str(i % 500),
            "resourceType": "postgres",
            "queryCategory": "queries",
            "resourceName": f"prod-db-{i % 50}",
            "resourceTags": TAG_SETS[i % len(TAG_SETS)],
            "accountFirstName": "Alice",
            "accountLastName": "Glick",
            "accountEmail": f"user{i % 40}@example.com",
            "accountTags": TAG_SETS[(i // 3) % len(TAG_SETS)],
            "sourceIp": "10.0.1.23",
            "clientIp": f"203.0.113.{i % 250}",
            "target": f"db{i % 50}.internal.example.com:5432",
            "authzJson": '{"decision":"allow"}',
        }
        if kind == 9:  # an SSH session: capture, and every other one still open (start record)
            record.update(
                queryCategory="ssh",
                resourceType="ssh",
                queryBody='{"command":"bash -l"}',
                replayable=True,
                capture={
                    "width": 120,
                    "height": 40,
                    "command": "bash -l",
                    "type": "shell",
                    "env": {"TERM": "xterm"},
                },
            )
            if i % 20 == 9:
                del record["completedAt"], record["duration"]
        records.append(json_format.ParseDict(record, cls()))
    return records


def _history(n: int) -> list[tuple[StreamSpec, Message]]:
    from tests.formats import samples  # the realistic per-stream samples, one per history stream

    history = [s for s in STREAMS.values() if s.kind is StreamKind.HISTORY]
    base = {spec.name: samples.sample(spec.name) for spec in history}
    out = []
    for i in range(n):
        spec = history[i % len(history)]
        record = type(base[spec.name])()
        record.CopyFrom(base[spec.name])
        record.activity_id = f"0CEGCEGCEGCEGCEGCEG{i:09d}"  # type: ignore[attr-defined]
        record.timestamp.FromNanoseconds(BASE_SECONDS * 1_000_000_000 + i * 7_000_123)  # type: ignore[attr-defined]
        out.append((spec, record))
    return out


def _best_rate(run: Callable[[], None], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return count / best


def measure(pairs: Sequence[tuple[StreamSpec, Message]], rounds: int) -> dict[str, float]:
    encoders = {fmt: make_encoder(fmt) for fmt in FORMATS}
    rates: dict[str, float] = {}

    def normalize_only() -> None:
        for spec, record in pairs:
            to_event(spec, record)

    rates["normalize"] = _best_rate(normalize_only, len(pairs), rounds)
    for fmt, encode in encoders.items():

        def run(encode: Callable[[dict[str, Any]], bytes] = encode) -> None:
            for spec, record in pairs:
                encode(to_event(spec, record))

        rates[fmt] = _best_rate(run, len(pairs), rounds)
    return rates


def measure_encoders(pairs: Sequence[tuple[StreamSpec, Message]], rounds: int) -> dict[str, float]:
    """Microseconds per record of each encoder alone, on events normalized beforehand."""
    events = [to_event(spec, record) for spec, record in pairs]
    micros: dict[str, float] = {}
    for fmt in FORMATS:
        encode = make_encoder(fmt)

        def run(encode: Callable[[dict[str, Any]], bytes] = encode) -> None:
            for event in events:
                encode(event)

        micros[fmt] = 1e6 / _best_rate(run, len(events), rounds)
    return micros


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=4000, help="records per set (default 4000)")
    parser.add_argument("--rounds", type=int, default=5, help="passes per cell; the best is kept (default 5)")
    args = parser.parse_args(argv)

    sets = {
        "activities": [(STREAMS["activities"], r) for r in _activities(args.records)],
        "queries": [(STREAMS["queries"], r) for r in _queries(args.records)],
        "history mix": _history(args.records),
        # More distinct records than any cache holds (4096): every cache lookup misses.
        "activities*": [(STREAMS["activities"], r) for r in _activities(DISTINCT_RECORDS, distinct=True)],
    }
    print(
        f"normalize + encode, records per CPU second on one core "
        f"(best of {args.rounds} passes x {args.records} records)\n"
    )
    print(format_header())
    for name, pairs in sets.items():
        print(format_row(name, measure(pairs, args.rounds)))
    print("\nencoding alone, microseconds per record (CPU time, best pass; events normalized beforehand)\n")
    print(f"{'records':<12}" + "".join(f"{fmt:>10}" for fmt in FORMATS))
    for name, pairs in sets.items():
        micros = measure_encoders(pairs, args.rounds)
        print(f"{name:<12}" + "".join(f"{micros[fmt]:>10.2f}" for fmt in FORMATS))
    print(
        "\nactivities*: every actor, entity and address distinct, so no cache ever hits (the worst case)."
        "\nPASS/MISS compares with the issue's targets; noisy machines read low, see the docstring."
    )


def format_header() -> str:
    """The table header: one column per format, each with its target."""
    targets = "".join(f"{f'{fmt} (>= {target:,})':>24}" for fmt, target in TARGETS.items())
    others = "".join(f"{fmt:>12}" for fmt in FORMATS if fmt not in TARGETS)
    return f"{'records':<12}{'normalize only':>16}{targets}{others}"


def format_row(name: str, rates: dict[str, float]) -> str:
    """One stream kind: normalize-only rate, then each format's rate and PASS or MISS."""
    cells = "".join(
        f"{rates[fmt]:>18,.0f}  {'PASS' if rates[fmt] >= target else 'MISS'}"
        for fmt, target in TARGETS.items()
    )
    others = "".join(f"{rates[fmt]:>12,.0f}" for fmt in FORMATS if fmt not in TARGETS)
    return f"{name:<12}{rates['normalize']:>16,.0f}{cells}{others}"


if __name__ == "__main__":
    main()
