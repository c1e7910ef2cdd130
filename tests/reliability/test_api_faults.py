"""The API misbehaving under live traffic: a rate-limit storm, 20 % transient faults, late
records landing behind the watermark inside the overlap. Zero loss, and no duplicates either
(nothing here makes a delivered batch go unacknowledged).

The engine runs in-process (these faults are all on the API side), polling every 0.2 s (0.1 s
in the storm); the file sink's output is compared with the emulator's truth.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.engine.engine import Engine
from auditstream.sdm.registry import DEFAULT_STREAM_NAMES, NANOS_PER_SECOND
from tests.e2e.support import daemon_config, live_engine, missing, noisy_neighbour, run_until_complete
from tests.helpers import async_wait_until
from tests.reliability.support import duplicates, tally

pytestmark = pytest.mark.reliability

STREAM_NAMES = list(DEFAULT_STREAM_NAMES)
# Live long sessions close within seconds (the default is up to 3 minutes), so a run can wait
# for every completion record.
SHORT_SESSIONS: dict[str, Any] = {"live_session_seconds": (0.5, 3.0)}


async def test_rate_limit_storm_far_below_demand(tmp_path, figures):
    """Eight streams polled every 0.1 s want ~4,800 requests a minute; the key may make 240
    (5 %), and another tool spends part of that budget too. (All 29 streams at 0.2 s take
    the same shape but 25-55 s, most of it one unlucky stream waiting for its turn.)"""
    limit, poll = 240, 0.1
    streams = ["activities", "queries", *(s for s in STREAM_NAMES if s.endswith("_history"))][:8]
    options = EmulatorOptions(
        seed=31, records=100, live=10, live_for=5, rate_limit=limit, rate_limit_burst=10, **SHORT_SESSIONS
    )
    async with Emulator(options) as emu:
        # One window per stream for the backlog, pages of 1,000 holding a poll's whole overlap
        # re-read: the budget goes to polling (see BENCHMARKS.md, API efficiency).
        config = daemon_config(
            emu,
            tmp_path,
            streams={"include": streams, "slice": "9d", "poll_interval": f"{poll}s"},
            source={"page_size": 1000},
        )
        engine = live_engine(config)
        started = time.monotonic()
        async with noisy_neighbour(emu) as neighbour:
            delivered = await run_until_complete(engine, emu, tmp_path / "out.jsonl", deadline_s=90)
        minutes = (time.monotonic() - started) / 60
        lost = missing(emu, streams, delivered)
        demand = len(streams) * 60 / poll
        answered = sum(emu.stats.pages_served.values())
    figures(
        load=f"{options.live:g} records/s live; {len(streams)} streams wanting ~{demand:,.0f} requests/min",
        faults=f"rate limit {limit}/min ({limit / demand:.0%} of demand), {emu.stats.rate_limited:,} "
        f"refusals, a noisy neighbour on the same key ({neighbour.calls:,} calls)",
        **tally(delivered, lost),
    )
    assert emu.stats.rate_limited > 0, "the limit must actually bite"
    assert answered / minutes < limit * 1.5, "the emulator enforced the limit"
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert duplicates(delivered) == 0


async def test_twenty_percent_transient_api_faults(tmp_path, figures):
    options = EmulatorOptions(
        seed=32, records=200, live=30, live_for=4, fault_rate=0.2, slow_fault_seconds=0.2, **SHORT_SESSIONS
    )
    async with Emulator(options) as emu:
        engine = live_engine(daemon_config(emu, tmp_path, source={"timeout": "2s"}))
        delivered = await run_until_complete(engine, emu, tmp_path / "out.jsonl", deadline_s=90)
        lost = missing(emu, STREAM_NAMES, delivered)
        calls = sum(emu.stats.requests_total.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(emu.stats.faults.items()))
    figures(
        load=f"{options.live:g} records/s live for {options.live_for:g}s, {len(STREAM_NAMES)} streams",
        faults=f"{emu.stats.faults_injected:,} of {calls:,} calls failed ({kinds})",
        **tally(delivered, lost),
    )
    assert emu.stats.faults_injected >= 0.1 * calls, "about one call in five fails"
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert duplicates(delivered) == 0


async def test_late_records_inside_the_overlap_are_delivered(tmp_path, figures):
    """Records that become visible after the watermark has passed their time, by up to the
    overlap (25 s here, five tails), are picked up: within the tail by the next poll, later by
    the sweep once their ground is that old."""
    overlap = 25.0
    options = EmulatorOptions(
        seed=33, records=200, live=20, live_for=6, late_rate=0.3, late_max_seconds=20, **SHORT_SESSIONS
    )
    rng = random.Random(33)
    inserted: list[tuple[str, str, int, int]] = []  # stream, key, filter time, watermark then

    async def insert_behind_the_watermark(emu: Emulator, engine: Engine) -> None:
        await async_wait_until(lambda: len(engine.pollers) == len(STREAM_NAMES), 10, "pollers")
        pollers = {p.spec.name: p for p in engine.pollers}
        now = time.time_ns()
        await async_wait_until(
            lambda: all(p.state.watermark_ns > now for p in pollers.values()), 30, "catch-up"
        )
        assert emu.factory is not None
        for stream in ("activities", "queries", "roles_history", "resources_history"):
            for _ in range(5):
                now = time.time_ns()
                when = now - int(rng.uniform(1.0, overlap - 10.0) * NANOS_PER_SECOND)
                watermark = pollers[stream].state.watermark_ns
                rows = emu.factory.live_rows(stream, when, now)
                for row in rows:
                    emu.store.add(stream, row)
                filter_times = dict(emu.filter_truth(stream))
                inserted.extend((stream, row.key, filter_times[row.key], watermark) for row in rows)

    async with Emulator(options) as emu:
        engine = live_engine(daemon_config(emu, tmp_path, streams={"overlap": f"{overlap:g}s"}))
        inserter = asyncio.create_task(insert_behind_the_watermark(emu, engine))
        delivered = await run_until_complete(engine, emu, tmp_path / "out.jsonl", deadline_s=90)
        assert inserter.done(), "the late records went in while live traffic ran"
        await inserter
        lost = missing(emu, STREAM_NAMES, delivered)
        late_live = emu.live.stats.late if emu.live else 0
    behind_watermark = [(s, k) for s, k, t, w in inserted if t < w]
    figures(
        load=f"{options.live:g} records/s live, {options.late_rate:.0%} of them up to "
        f"{options.late_max_seconds:g}s late",
        faults=f"{late_live:,} late live records + {len(behind_watermark)} inserted up to "
        f"{overlap - 10:g}s behind the watermark (overlap {overlap:g}s)",
        **tally(delivered, lost),
    )
    assert len(behind_watermark) == len(inserted) >= 20, "each inserted record was behind the watermark"
    assert late_live > 0
    assert not set(behind_watermark) - set(delivered), "a late record was missed"
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert duplicates(delivered) == 0
