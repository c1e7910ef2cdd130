"""The call budget: at most ``per_minute`` calls in any window, live work first, every caller
in its turn. Windows here are fractions of a second so that ageing out is quick to watch."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from auditstream.sdm.budget import CallBudget
from auditstream.sdm.errors import RateLimitInfo


async def grants_in_order(budget: CallBudget, callers: list[tuple[str, bool]]) -> list[str]:
    order: list[str] = []

    async def one(name: str, urgent: bool) -> None:
        await budget.take(urgent)
        order.append(name)

    tasks = []
    for name, urgent in callers:
        tasks.append(asyncio.create_task(one(name, urgent)))
        await asyncio.sleep(0)  # each one queues before the next arrives
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    return order


async def fill(budget: CallBudget, calls: int, urgent: bool = True) -> None:
    for _ in range(calls):
        await asyncio.wait_for(budget.take(urgent), 0.1)


async def test_a_backfill_spends_most_of_the_window_at_once_and_it_is_counted():
    budget = CallBudget(per_minute=2500)
    await fill(budget, 2000, urgent=False)  # 80 %: what catch-up may take without waiting
    assert budget.used_last_minute() == 2000


async def test_no_window_ever_holds_more_than_the_ceiling():
    window = 0.3
    budget = CallBudget(per_minute=20, window_seconds=window)
    granted: list[float] = []

    async def caller(urgent: bool) -> None:
        for _ in range(6):
            await budget.take(urgent)
            granted.append(time.monotonic())

    await asyncio.wait_for(asyncio.gather(*(caller(i % 3 == 0) for i in range(10))), 10)
    assert len(granted) == 60
    worst = max(sum(1 for t in granted if start <= t < start + window) for start in granted)
    assert worst <= 20, f"{worst} calls within one window of {window} s"


async def test_when_calls_are_scarce_live_work_goes_first_and_each_kind_in_arrival_order():
    budget = CallBudget(per_minute=10, window_seconds=0.2)
    await fill(budget, 10)
    callers = [
        ("catch-up 1", False),
        ("live 1", True),
        ("catch-up 2", False),
        ("live 2", True),
        ("live 3", True),
    ]
    order = await grants_in_order(budget, callers)
    assert order == ["live 1", "live 2", "live 3", "catch-up 1", "catch-up 2"]


async def test_catch_up_leaves_a_fifth_of_the_window_for_live_work():
    budget = CallBudget(per_minute=10, window_seconds=0.5)
    await fill(budget, 8, urgent=False)
    waiting = asyncio.create_task(budget.take(urgent=False))
    await fill(budget, 2, urgent=True)  # the reserve serves live work at once
    assert not waiting.done(), "catch-up waits for calls to age out of the window"
    await asyncio.wait_for(waiting, 10)
    assert budget.used_last_minute() == 1, "granted once the window's earlier calls aged out"


async def test_a_key_nearly_spent_by_others_holds_catch_up_back_until_its_reset():
    budget = CallBudget(per_minute=6000)
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    budget.observe(
        RateLimitInfo(limit=5000, remaining=100, reset_at=reset, bucket="read"), reset.timestamp() - 0.5
    )
    await asyncio.wait_for(budget.take(urgent=True), 0.05)
    held = asyncio.create_task(budget.take(urgent=False))
    await asyncio.sleep(0.2)
    assert not held.done()
    await asyncio.wait_for(held, 5)


async def test_a_cancelled_waiter_gives_its_turn_and_leaks_no_call():
    budget = CallBudget(per_minute=10, window_seconds=0.2)
    await fill(budget, 10)
    first = asyncio.create_task(budget.take(urgent=True))
    second = asyncio.create_task(budget.take(urgent=True))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert budget.used_last_minute() == 1
