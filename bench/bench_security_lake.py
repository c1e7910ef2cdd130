"""The security_lake sink: Parquet rows per second, and what a row costs in bytes.

    .venv/bin/python -m bench.bench_security_lake [--records 100000] [--rounds 3] [--no-moto]

(from the repository root: the records are bench_formats', the history samples tests'.)

Over a realistic mix, 40% activities (four verbs: Authentication, Entity Management, Account
Change; every one with its own actor, entities and address), 40% queries (one SSH session in
ten) and 20% history records of every history stream, as bench_formats makes them:

- ``encode``: an event dict to its row (the OCSF event shaped for its class's Arrow schema, as
  JSON): what ``send()`` does per record, on the event loop;
- ``parquet``: rows to zstd Parquet objects, one per OCSF class (read with the class's schema,
  sorted by time, written): what a flush does in its worker threads;
- ``end to end``: ``send()`` from 4 streams at once, pages of 500, to moto server (S3, its own
  process) until every ``send()`` returned, i.e. every object written; the records are behind
  (2024), so none waits for ``flush_interval``. moto is far slower than S3: a lower bound.

Rates are wall-clock, best of ``--rounds``. Bytes per row: the row's JSON, and the Parquet
objects' size over their rows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from auditstream.formats import to_event
from auditstream.sdm.registry import STREAMS
from auditstream.sinks.base import Envelope
from auditstream.sinks.security_lake import (
    CLASS_KEYS,
    OcsfRow,
    SecurityLakeSink,
    SecurityLakeSinkSettings,
    SecurityLakeTransport,
    build_object,
)
from bench.bench_formats import _activities, _history, _queries

PAGE = 500
STREAMS_AT_ONCE = 4
BUCKET = "aws-security-data-lake-us-east-1-bench0123456789"


def envelopes(count: int) -> list[Envelope]:
    activities = [(STREAMS["activities"], r) for r in _activities(count * 2 // 5, distinct=True)]
    queries = [(STREAMS["queries"], r) for r in _queries(count * 2 // 5)]
    history = _history(count - len(activities) - len(queries))
    out = []
    for n, (spec, record) in enumerate([*activities, *queries, *history]):
        event = to_event(spec, record)
        out.append(Envelope(spec.name, f"{spec.name}-{n}", 1_714_564_800_000_000_000 + n * 1_000_000, event))
    return out


def settings(endpoint_url: str = "http://127.0.0.1:9") -> SecurityLakeSinkSettings:
    return SecurityLakeSinkSettings.model_validate(
        {
            "type": "security_lake",
            "name": "bench",
            "region": "us-east-1",
            "account_id": "111122223333",
            "bucket": BUCKET,
            "endpoint_url": endpoint_url,
            "force_path_style": True,
            "sources": {key: f"sdm_{key}"[:20] for key in CLASS_KEYS.values() if key != "base_event"},
        }
    )


def best(run: Callable[[], object], rounds: int) -> float:
    fastest = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def by_class(rows: list[OcsfRow]) -> dict[int, list[OcsfRow]]:
    groups: dict[int, list[OcsfRow]] = collections.defaultdict(list)
    for row in rows:
        groups[row.class_uid].append(row)
    return groups


async def end_to_end(records: list[Envelope], rounds: int) -> tuple[float, int] | None:
    """Seconds of the fastest round and the objects it wrote; None without moto."""
    try:
        from tests.peers.moto import MotoServer, aws_environment, moto_server_command

        moto_server_command()
    except (ImportError, RuntimeError):
        return None
    os.environ.update(aws_environment())
    streams: dict[str, list[Envelope]] = collections.defaultdict(list)
    for n, envelope in enumerate(records):
        streams[f"stream-{n % STREAMS_AT_ONCE}"].append(
            envelope._replace(stream=f"stream-{n % STREAMS_AT_ONCE}")
        )
    fastest, objects = float("inf"), 0
    with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
        for round_number in range(rounds):
            bucket = f"{BUCKET}-{round_number}"[:63]
            moto.client("s3").create_bucket(Bucket=bucket)
            config = settings(moto.endpoint_url).model_copy(update={"bucket": bucket})
            sink = SecurityLakeSink(config, state_dir=Path(tmp))
            await sink.start()

            async def one(pages: list[Envelope], sink: SecurityLakeSink = sink) -> None:
                for start in range(0, len(pages), PAGE):
                    await sink.send(pages[start : start + PAGE])

            started = time.perf_counter()
            await asyncio.gather(*(one(pages) for pages in streams.values()))
            elapsed = time.perf_counter() - started
            await sink.close()
            if elapsed < fastest:
                fastest = elapsed
                objects = len(moto.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []))
    return fastest, objects


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-moto", action="store_true", help="skip the end-to-end run")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    records = envelopes(args.records)
    transport = SecurityLakeTransport(settings())
    for envelope in records[:: max(1, len(records) // 100)]:  # not timed: the encoder's caches warm
        transport.encode(envelope)
    rows: list[OcsfRow] = []

    def encode() -> None:
        rows[:] = [transport.encode(envelope) for envelope in records]  # type: ignore[misc]

    encoding = best(encode, args.rounds)
    groups = by_class(rows)
    sizes: dict[int, int] = {}
    for uid, group in groups.items():  # not timed: imports, schemas, the JSON reader's first use
        build_object(uid, group[:10])

    def build() -> None:
        for uid, group in groups.items():
            sizes[uid] = len(build_object(uid, group).body)

    building = best(build, args.rounds)
    n = len(rows)
    json_bytes = sum(len(row) for row in rows)
    print(f"{n:,} records ({len(groups)} OCSF classes), best of {args.rounds} rounds, wall clock")
    print(f"encode (event -> row)          {n / encoding:>10,.0f} rows/s")
    print(f"parquet (rows -> zstd objects) {n / building:>10,.0f} rows/s")
    parquet_bytes = sum(sizes.values())
    print(f"bytes per row                  {json_bytes / n:>10,.0f} JSON  {parquet_bytes / n:,.1f} Parquet")
    if not args.no_moto:
        result = asyncio.run(end_to_end(records, args.rounds))
        if result is None:
            print("end to end                     skipped (no moto_server: install the test extra)")
        else:
            seconds, objects = result
            print(f"end to end (moto S3)           {n / seconds:>10,.0f} rows/s  ({objects} objects)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
