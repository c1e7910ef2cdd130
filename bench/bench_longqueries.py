"""What re-checking open long-running queries costs in API requests per minute.

    .venv/bin/python -m bench.bench_longqueries [--sessions 10,100,1000]

The emulator plays the reading where the Queries filter applies to the start time, with N
sessions open for hours that stay open during the measurement. The daemon polls only the
queries stream; we count the List calls its re-checks make per re-check round and scale to
the default ``long_query_recheck = "1m"``, next to StrongDM's 5,000 reads/minute budget.
Re-check windows around start times closer than a minute are merged into one listing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import tempfile
import time
from pathlib import Path

import structlog

from auditstream.config import parse_config
from auditstream.emulator import Emulator, EmulatorOptions, QueriesTime
from auditstream.engine.engine import Engine, RunPlan
from tests.helpers import async_wait_until

BUDGET_PER_MINUTE = 5000
ROUNDS = 5


async def measure(sessions: int) -> tuple[int, float, int]:
    options = EmulatorOptions(
        records=200,
        streams=("queries",),
        queries_time=QueriesTime.START,
        long_sessions=sessions,
        long_session_close_within=24 * 3600,
        long_session_age_seconds=(300.0, 6 * 3600.0),
    )
    async with Emulator(options) as emu:
        with tempfile.TemporaryDirectory() as tmp:
            start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=7)).isoformat()
            config = parse_config(
                {
                    "source": {
                        "endpoint": emu.address,
                        "access_key": options.access_key,
                        "secret_key": options.secret_key,
                        "insecure": True,
                        "page_size": 500,
                    },
                    "streams": {
                        "include": ["queries"],
                        "start_at": start,
                        "slice": "1d",
                        "poll_interval": "1h",  # only the catch-up poll: what remains is re-checks
                        "long_query_recheck": "0.5s",
                    },
                    "checkpoint": {"path": str(Path(tmp) / "cp.db")},
                    "sinks": [{"type": "file", "name": "f", "path": str(Path(tmp) / "out"), "fsync": False}],
                    "metrics": {"listen": ""},
                },
                env={},
            )
            engine = Engine(config, RunPlan(streams=["queries"], checkpoint_path=config.checkpoint.path))
            task = asyncio.create_task(engine.run())
            tracker_ready = time.monotonic() + 60
            while not engine.pollers or not engine.pollers[0].state.open_queries:
                if time.monotonic() > tracker_ready:
                    raise RuntimeError("sessions never tracked")
                await asyncio.sleep(0.05)
            poller = engine.pollers[0]
            tracker = poller._tracker
            assert tracker is not None
            first = tracker.rounds + 1
            await async_wait_until(lambda: tracker.rounds >= first, 60, "a round boundary")
            open_now = len(poller.state.open_queries)
            before = emu.stats.requests_total["queries"]
            await async_wait_until(lambda: tracker.rounds >= first + ROUNDS, 120, f"{ROUNDS} re-check rounds")
            calls = emu.stats.requests_total["queries"] - before
            engine.stop.set()
            await task
    return open_now, calls / ROUNDS, calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="10,100,1000")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(
        "| open sessions | List calls per re-check round | requests/min at recheck 1m | share of 5,000/min |"
    )
    print("|---:|---:|---:|---:|")
    for n in (int(x) for x in args.sessions.split(",")):
        open_now, per_round, _ = asyncio.run(measure(n))
        print(f"| {open_now:,} | {per_round:,.1f} | {per_round:,.0f} | {per_round / BUDGET_PER_MINUTE:.1%} |")


if __name__ == "__main__":
    main()
