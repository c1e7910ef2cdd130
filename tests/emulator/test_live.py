"""Live traffic, late records, scheduled visibility and long-running sessions."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from strongdm import activities_pb2

from auditstream.emulator import Emulator, QueriesTime
from auditstream.sdm.registry import SERVED_STREAM_NAMES, STREAMS, StreamKind
from tests.helpers import async_wait_until

from .rawclient import list_all, rfc3339

NANOS = 1_000_000_000
MakeEmulator = Callable[..., Awaitable[Emulator]]


async def test_live_generation_rate_and_mix(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=10, history_records=5, live=600, live_for=0.5)
    before = {name: len(emu.truth(name)) for name in SERVED_STREAM_NAMES}
    await emu.live_done()
    added = {name: len(emu.truth(name)) - before[name] for name in SERVED_STREAM_NAMES}
    assert 280 <= sum(added.values()) <= 330  # 600/s for 0.5 s (history events can add 2-3)
    history = sum(n for name, n in added.items() if STREAMS[name].kind is StreamKind.HISTORY)
    assert added["activities"] > 100 and added["queries"] > 100 and 5 <= history < 80
    assert 1 <= added["managed_secret_logs"] < 30  # 3 % of events


async def test_late_records_appear_now_with_past_timestamps(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(
        records=0, streams=("activities",), live=400, live_for=0.5, late_rate=1.0, late_max_seconds=60
    )
    started = time.time_ns()
    await emu.live_done()
    done = time.time_ns()
    new = emu.truth("activities")
    assert len(new) >= 150
    ages = [(done - t) / NANOS for _, t in new]
    assert all(t <= done for _, t in new) and all(t >= started - 61 * NANOS for _, t in new)
    assert sum(age > 10 for age in ages) > len(ages) // 2  # most are well behind "now"
    window = f'after:"{rfc3339(started - 61 * NANOS)}"'
    assert set((await list_all(emu, "activities", filter_text=window)).keys()) == {k for k, _ in new}


async def test_scheduled_visibility(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=0, streams=())
    record = activities_pb2.Activity(id="later")
    record.completed_at.FromNanoseconds(time.time_ns() - 3600 * NANOS)
    emu.insert("activities", record, visible_at=time.time_ns() + int(0.3 * NANOS))
    assert emu.truth("activities") == [] and emu.store.pending_count() == 1
    assert not (await list_all(emu, "activities")).records
    await async_wait_until(lambda: emu.all_keys("activities") == {"later"}, 5, "scheduled record")
    assert set((await list_all(emu, "activities")).keys()) == {"later"}


async def _sessions(emu: Emulator) -> dict[str, dict[str, object]]:
    """Per query id: its start and completion records, from a full listing."""
    by_id: dict[str, dict[str, object]] = {}
    for record in (await list_all(emu, "queries", limit=1000)).records:
        kind = "completion" if record.completed_at.seconds else "start"
        by_id.setdefault(record.id, {})[kind] = record
    return by_id


async def test_sessions_open_at_start_up_complete_later(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=0, streams=(), long_sessions=4, long_session_close_within=1.0)
    keys = emu.all_keys("queries")
    assert len(keys) == 4 and all(key.endswith(":start") for key in keys)
    await async_wait_until(lambda: len(emu.all_keys("queries")) == 8, 5, "completions")
    sessions = await _sessions(emu)
    assert len(sessions) == 4
    now = time.time_ns()
    for pair in sessions.values():
        start, completion = pair["start"], pair["completion"]
        assert completion.timestamp == start.timestamp  # type: ignore[attr-defined]
        assert not start.HasField("duration") and not start.HasField("completed_at")  # type: ignore[attr-defined]
        begun = start.timestamp.ToNanoseconds()  # type: ignore[attr-defined]
        ended = completion.completed_at.ToNanoseconds()  # type: ignore[attr-defined]
        assert 300 * NANOS <= now - begun <= 6 * 3600 * NANOS + 10 * NANOS  # minutes to hours ago
        assert completion.duration.ToNanoseconds() == ended - begun  # type: ignore[attr-defined]
        assert start.query_category in ("ssh", "rdp", "k8s")  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", list(QueriesTime))
async def test_which_window_finds_a_long_session_completion(
    make_emulator: MakeEmulator, mode: QueriesTime
) -> None:
    emu = await make_emulator(
        records=0, streams=(), long_sessions=3, long_session_close_within=0.5, queries_time=mode
    )
    await async_wait_until(lambda: len(emu.all_keys("queries")) == 6, 5, "completions")

    async def around(ns: int, query_id: str) -> set[str]:
        """Keys of one session's records found by a two-second window around ``ns``."""
        text = f'after:"{rfc3339(ns - NANOS)}" before:"{rfc3339(ns + NANOS)}"'
        found = (await list_all(emu, "queries", filter_text=text)).keys()
        return {key for key in found if key.startswith(query_id)}

    for query_id, pair in (await _sessions(emu)).items():
        begun = pair["start"].timestamp.ToNanoseconds()  # type: ignore[attr-defined]
        ended = pair["completion"].completed_at.ToNanoseconds()  # type: ignore[attr-defined]
        if mode is QueriesTime.START:
            assert await around(begun, query_id) == {f"{query_id}:start", query_id}
            assert await around(ended, query_id) == set()
        else:
            assert await around(begun, query_id) == {f"{query_id}:start"}
            assert await around(ended, query_id) == {query_id}


async def test_live_long_sessions_complete_seconds_later(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(
        records=0, streams=("queries",), live=100, live_for=0.3,
        live_long_session_fraction=1.0, live_session_seconds=(0.2, 0.6),
    )  # fmt: skip
    await emu.live_done()
    opened = {k for k in emu.all_keys("queries") if k.endswith(":start")}
    assert len(opened) >= 20
    ids = {k.removesuffix(":start") for k in opened}
    await async_wait_until(lambda: ids <= emu.all_keys("queries"), 5, "live completions")
    assert emu.live is not None and emu.live.stats.sessions_opened == len(opened)
