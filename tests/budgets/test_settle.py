"""Settling: once per request id, actual usage recorded in full, leases, late settles."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from budgets import BudgetLedger, BudgetLimits, Refused, Reserved
from budgets.ledger import MAX_RELEASE_PER_CALL
from memory.redis_client import RedisClient
from tests.budgets.conftest import ManualClock, gather_bounded, request

DAY_100 = BudgetLimits(user_day=100, user_month=-1, brand_month=-1, conversation=-1)


async def settle(ledger: BudgetLedger, request_id: str, tokens: int, cost: float = 0.0) -> bool:
    return await ledger.settle(brand="growain", request_id=request_id, actual_tokens=tokens,
                               cost_usd=cost)


async def test_settle_replaces_the_reservation(ledger: BudgetLedger) -> None:
    await ledger.reserve(request("r1", 80, DAY_100))
    assert await settle(ledger, "r1", 25)
    view = await ledger.usage("growain", "alice")
    assert (view.user_day.used, view.user_day.reserved) == (25, 0)
    assert (view.brand_month.used, view.brand_month.reserved) == (25, 0)
    assert await ledger.conversation_remaining("growain", "conv-1", 100) == 75


async def test_a_repeated_settle_changes_nothing(ledger: BudgetLedger) -> None:
    await ledger.reserve(request("r1", 80, DAY_100))
    assert await settle(ledger, "r1", 25, cost=0.5)
    before = await ledger.usage("growain", "alice")
    assert not await settle(ledger, "r1", 60, cost=0.5)
    assert await ledger.usage("growain", "alice") == before
    assert before.brand_month.cost_usd == 0.5


async def test_concurrent_duplicate_settles_settle_once(ledger: BudgetLedger) -> None:
    await ledger.reserve(request("r1", 80, DAY_100))
    results = await asyncio.gather(*(settle(ledger, "r1", 30) for _ in range(20)))
    assert results.count(True) == 1
    assert (await ledger.usage("growain", "alice")).user_day.used == 30


async def test_settling_an_unknown_request_does_nothing(ledger: BudgetLedger) -> None:
    assert not await settle(ledger, "never-reserved", 10)
    assert (await ledger.brand_usage("growain")).used == 0


async def test_actual_above_the_reservation_is_recorded(ledger: BudgetLedger) -> None:
    await ledger.reserve(request("r1", 80, DAY_100))
    assert await settle(ledger, "r1", 130)
    assert (await ledger.usage("growain", "alice")).user_day.used == 130
    assert await ledger.reserve(request("r2", 0, DAY_100)) == Refused("user_day", 100, 130)


async def test_an_abandoned_reservation_is_released_after_its_lease(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    assert await ledger.reserve(request("held", 100, DAY_100)) == Reserved("held", 100)
    assert isinstance(await ledger.reserve(request("r2", 1, DAY_100)), Refused)
    clock.advance(119.9)
    assert (await ledger.usage("growain", "alice")).user_day.reserved == 100
    clock.advance(0.1)
    assert (await ledger.usage("growain", "alice")).user_day.reserved == 0
    assert await ledger.reserve(request("r3", 100, DAY_100)) == Reserved("r3", 100)


async def test_a_late_settle_records_usage_exactly_once(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    await ledger.reserve(request("slow", 80, DAY_100))
    clock.advance(600)
    assert (await ledger.brand_usage("growain")).reserved == 0
    assert await settle(ledger, "slow", 50, cost=0.25)
    assert not await settle(ledger, "slow", 50, cost=0.25)
    view = await ledger.usage("growain", "alice")
    assert (view.user_day.used, view.user_day.reserved) == (50, 0)
    assert (view.brand_month.used, view.brand_month.cost_usd) == (50, 0.25)


async def test_a_settle_racing_its_lease_expiry_counts_once(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    await ledger.reserve(request("edge", 80, DAY_100))
    clock.advance(120)
    results = await asyncio.gather(settle(ledger, "edge", 40), ledger.usage("growain", "alice"),
                                   settle(ledger, "edge", 40))
    assert results.count(True) == 1
    view = await ledger.usage("growain", "alice")
    assert (view.user_day.used, view.user_day.reserved) == (40, 0)


async def test_lease_length_is_configurable(any_redis: RedisClient, clock: ManualClock) -> None:
    ledger = BudgetLedger(any_redis, clock=clock, lease_s=5)
    await ledger.reserve(request("r1", 100, DAY_100))
    clock.advance(5)
    assert await ledger.reserve(request("r2", 100, DAY_100)) == Reserved("r2", 100)


async def test_expired_leases_are_released_in_bounded_batches(
    redis_client: RedisClient, clock: ManualClock
) -> None:
    ledger = BudgetLedger(redis_client, clock=clock)
    await gather_bounded(ledger.reserve(request(f"r{i}", 1, user_id=f"u{i % 7}"))
                         for i in range(300))
    clock.advance(121)
    assert (await ledger.brand_usage("growain")).reserved == 300 - MAX_RELEASE_PER_CALL
    assert (await ledger.brand_usage("growain")).reserved == 0
    assert (await ledger.usage("growain", "u3")).user_day.reserved == 0


async def test_usage_is_billed_in_the_period_it_was_reserved_in(
    ledger: BudgetLedger, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    await ledger.reserve(request("r1", 80, DAY_100))
    clock.set(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    assert await settle(ledger, "r1", 70, cost=0.1)
    december = await ledger.usage("growain", "alice")
    assert (december.day, december.user_day.used, december.brand_month.used) == ("20261201", 0, 0)
    november = await ledger.brand_usage("growain", "202611")
    assert (november.used, november.reserved, november.cost_usd) == (70, 0, 0.1)


async def test_costs_add_up_exactly(ledger: BudgetLedger) -> None:
    async def turn(i: int) -> None:
        await ledger.reserve(request(f"r{i}", 1))
        await settle(ledger, f"r{i}", 1, cost=0.000015)

    await gather_bounded(turn(i) for i in range(60))
    assert (await ledger.brand_usage("growain")).cost_usd == 0.0009
