"""The call budget: a ceiling per minute, live work first, every caller in its turn."""

from __future__ import annotations

import asyncio
import datetime as dt

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


async def test_a_full_bucket_serves_at_once_and_counts_the_minute():
    budget = CallBudget(per_minute=600)
    for _ in range(100):
        await asyncio.wait_for(budget.take(urgent=False), 0.1)
    assert budget.used_last_minute() == 100


async def test_when_calls_are_scarce_live_work_goes_first_and_each_kind_in_arrival_order():
    budget = CallBudget(per_minute=6000)  # 100 a second
    budget._tokens = 0.0
    callers = [
        ("catch-up 1", False),
        ("live 1", True),
        ("catch-up 2", False),
        ("live 2", True),
        ("live 3", True),
    ]
    order = await grants_in_order(budget, callers)
    assert order == ["live 1", "live 2", "live 3", "catch-up 1", "catch-up 2"]


async def test_catch_up_leaves_a_reserve_for_live_work():
    budget = CallBudget(per_minute=600)  # ten a second: 1.5 tokens take 150 ms
    budget._tokens = budget._reserve + 0.5  # below what catch-up may dip into, enough for live work
    await asyncio.wait_for(budget.take(urgent=True), 0.01)
    waiting = asyncio.create_task(budget.take(urgent=False))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "catch-up waits for the bucket to refill past the reserve"
    await asyncio.wait_for(waiting, 10)


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


async def test_a_cancelled_waiter_gives_its_turn_and_leaks_no_token():
    budget = CallBudget(per_minute=6000)
    budget._tokens = 0.0
    first = asyncio.create_task(budget.take(urgent=True))
    second = asyncio.create_task(budget.take(urgent=True))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert budget.used_last_minute() == 1
