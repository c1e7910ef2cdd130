"""Emulator memory and paging speed with 1,000,000 activities.

Run: ``.venv/bin/python -m bench.bench_emulator [--records N]``. Prints build time, RSS
per record, and the time per page (limit 1000) near the start and the end of the range,
both for a cursor walk and for a fresh time-window query: paging must not slow down as
the cursor moves through the index.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import grpc

from auditstream.emulator import Emulator, EmulatorOptions, Order
from auditstream.sdm import signing
from auditstream.sdm.registry import STREAMS

PAGE = 1000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


async def measure(records: int) -> list[tuple[str, str]]:
    spec = STREAMS["activities"]
    options = EmulatorOptions(records=records, streams=("activities",), order=Order.OLDEST)
    rss_before = rss_bytes()
    started = time.perf_counter()
    emu = Emulator(options)
    await emu.start()
    build = time.perf_counter() - started
    rss_after = rss_bytes()
    secret = options.secret
    truth = emu.truth("activities")
    first_ns, last_ns = truth[0][1], truth[-1][1]
    rows: list[tuple[str, str]] = [
        ("records", f"{records:,}"),
        ("build time", f"{build:.1f} s"),
        ("RSS per record", f"{(rss_after - rss_before) / max(1, records):.0f} B"),
    ]
    async with grpc.aio.insecure_channel(emu.address) as channel:
        call = channel.unary_unary(
            spec.method_path,
            request_serializer=spec.request_class.SerializeToString,
            response_deserializer=spec.response_class.FromString,
        )

        async def page(filter_text: str, cursor: str = "") -> tuple[float, str, int]:
            request = spec.request_class(filter=filter_text)
            request.meta.limit = PAGE
            request.meta.cursor = cursor
            meta = signing.request_metadata(
                options.access_key, secret, spec.signing_name, request.SerializeToString()
            )
            t0 = time.perf_counter()
            response = await call(request, metadata=meta)
            return time.perf_counter() - t0, response.meta.next_cursor, len(response.activities)

        # a full cursor walk, oldest first: early pages vs late pages
        window = f'after:"{rfc3339(first_ns)}" before:"{rfc3339(last_ns + 1)}"'
        timings: list[float] = []
        cursor, total = "", 0
        while True:
            elapsed, cursor, n = await page(window, cursor)
            timings.append(elapsed)
            total += n
            if not cursor:
                break
        rows.append(("records listed by cursor walk", f"{total:,}"))
        rows.append(("page time, first 10 pages", f"{statistics.mean(timings[:10]) * 1e3:.2f} ms"))
        rows.append(("page time, last 10 pages", f"{statistics.mean(timings[-10:]) * 1e3:.2f} ms"))
        # fresh one-hour windows at the start and at the end of the range
        hour = 3600 * 1_000_000_000
        for label, lo in (("start", first_ns), ("end", last_ns - hour)):
            text = f'after:"{rfc3339(lo)}" before:"{rfc3339(lo + hour)}"'
            samples = [(await page(text))[0] for _ in range(20)]
            rows.append(
                (f"first page of a 1 h window at the {label}", f"{statistics.median(samples) * 1e3:.2f} ms")
            )
    await emu.stop()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.records))
    width = max(len(label) for label, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
