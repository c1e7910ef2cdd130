"""The daemon delivers every record exactly once whatever the API's undocumented answers are.

Each scenario plays a combination of the unknowns (bound semantics, order, short pages,
equal timestamps across page boundaries, precision, which time the Queries filter uses) with
faults, late records and rate limits, and compares the file sink with the emulator's truth.
"""

from __future__ import annotations

import contextlib

import pytest

from auditstream.emulator import Bound, Emulator, EmulatorOptions, Order, QueriesTime, TimePrecision
from tests.e2e.support import daemon_config, live_engine, noisy_neighbour, run_until_complete

SCENARIOS = {
    "defaults-with-faults-late-and-live": dict(
        records=300,
        fault_rate=0.15,
        slow_fault_seconds=0.3,
        late_rate=0.3,
        late_max_seconds=25,  # within the 30 s overlap of tests/e2e/support.py: swept once aged
        live=40,
        live_for=3,
    ),
    "exclusive-after-inclusive-before-newest-first-short-pages": dict(
        records=300,
        after_bound=Bound.EXCLUSIVE,
        before_bound=Bound.INCLUSIVE,
        order=Order.NEWEST,
        short_pages=0.4,
        max_page_size=37,
    ),
    "both-exclusive-oldest-first-equal-timestamps-across-pages": dict(
        records=400,
        after_bound=Bound.EXCLUSIVE,
        before_bound=Bound.EXCLUSIVE,
        order=Order.OLDEST,
        same_timestamp=60,
        max_page_size=25,
    ),
    "both-inclusive-unordered-second-precision-equal-timestamps": dict(
        records=300,
        after_bound=Bound.INCLUSIVE,
        before_bound=Bound.INCLUSIVE,
        same_timestamp=40,
        time_precision=TimePrecision.S,
        short_pages=0.3,
        max_page_size=30,
    ),
    "queries-filtered-on-start-time-with-long-sessions": dict(
        records=200,
        queries_time=QueriesTime.START,
        long_sessions=8,
        long_session_close_within=3,
        live=30,
        live_for=3,
        live_session_seconds=(0.5, 2.0),
        live_long_session_fraction=0.5,
    ),
    "queries-filtered-on-completion-time-with-long-sessions": dict(
        records=200,
        queries_time=QueriesTime.COMPLETED,
        long_sessions=8,
        long_session_close_within=3,
        live=30,
        live_for=3,
        live_session_seconds=(0.5, 2.0),
        live_long_session_fraction=0.5,
    ),
    "rate-limited-with-faults-and-a-noisy-neighbour": dict(
        records=60, rate_limit=600, rate_limit_burst=5, fault_rate=0.2, slow_fault_seconds=0.3
    ),
}

# A rate limit far below demand: few streams and tiny pages, so the test spends its time
# waiting on resets rather than on the backlog.
DAEMON_OVERRIDES = {
    "rate-limited-with-faults-and-a-noisy-neighbour": dict(
        streams={"include": ["activities", "queries", "accounts_history"], "poll_interval": "1s"},
        source={"page_size": 5},
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_every_record_delivered_exactly_once(scenario, tmp_path):
    # Live long sessions close within seconds here (the default is up to 3 minutes), so the
    # test can wait for every completion record.
    settings = {"live_session_seconds": (0.5, 3.0), **SCENARIOS[scenario]}
    options = EmulatorOptions(seed=len(scenario), **settings)
    async with Emulator(options) as emu:
        config = daemon_config(emu, tmp_path, **DAEMON_OVERRIDES.get(scenario, {}))
        engine = live_engine(config)
        async with noisy_neighbour(emu) if options.rate_limit else contextlib.nullcontext():
            delivered = await run_until_complete(engine, emu, tmp_path / "out.jsonl", deadline_s=90)
    duplicates = {key: n for key, n in delivered.items() if n > 1}
    assert not duplicates, (
        f"{len(duplicates)} records delivered twice in a clean run, e.g. {list(duplicates)[:5]}"
    )
    if options.rate_limit:
        assert emu.stats.rate_limited > 0, "the scenario must actually hit the rate limit"
    if options.fault_rate:
        assert emu.stats.faults_injected > 0
    if options.long_sessions:
        open_at_start = [k for k, _ in emu.truth("queries") if k.endswith(":start")]
        completions = {k.removesuffix(":start") for k in open_at_start} & {k for _, k in delivered}
        assert len(completions) >= options.long_sessions, "every session's start and completion delivered"
        queries = next(p for p in engine.pollers if p.spec.name == "queries")
        assert not queries.state.open_queries, "no session left open"
