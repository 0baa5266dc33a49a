"""UTC days and months roll over with the (injected) clock; period keys expire after them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budgets import BudgetLedger, BudgetLimits, Refused, Reserved
from budgets.keys import PERIOD_MARGIN_S, BrandKeys
from memory.redis_client import RedisClient
from tests.budgets.conftest import ManualClock, request

LIMITS = BudgetLimits(user_day=100, user_month=250, brand_month=-1, conversation=-1)


async def spend(ledger: BudgetLedger, request_id: str, tokens: int) -> Reserved | Refused:
    outcome = await ledger.reserve(request(request_id, tokens, LIMITS,
                                           conversation_id=request_id))
    if isinstance(outcome, Reserved):
        await ledger.settle(brand="growain", request_id=request_id, actual_tokens=tokens)
    return outcome


async def test_the_day_rolls_over_at_utc_midnight(ledger: BudgetLedger,
                                                  clock: ManualClock) -> None:
    clock.set(datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC))
    assert isinstance(await spend(ledger, "a", 100), Reserved)
    assert await spend(ledger, "b", 1) == Refused("user_day", 100, 100)
    clock.advance(1)
    assert isinstance(await spend(ledger, "c", 100), Reserved)
    view = await ledger.usage("growain", "alice")
    assert (view.day, view.user_day.used, view.user_month.used) == ("20261129", 100, 200)


async def test_the_month_rolls_over_at_utc_month_start(ledger: BudgetLedger,
                                                      clock: ManualClock) -> None:
    for day, request_id, tokens in ((28, "a", 100), (29, "b", 100), (30, "c", 50)):
        clock.set(datetime(2026, 11, day, 10, tzinfo=UTC))
        assert isinstance(await spend(ledger, request_id, tokens), Reserved)
    assert await spend(ledger, "d", 1) == Refused("user_month", 250, 250)
    clock.set(datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    assert isinstance(await spend(ledger, "e", 100), Reserved)
    view = await ledger.usage("growain", "alice")
    assert (view.month, view.user_month.used, view.brand_month.used) == ("202612", 100, 100)
    assert (await ledger.brand_usage("growain", "202611")).used == 250


async def test_period_keys_expire_after_their_period(
    ledger: BudgetLedger, clock: ManualClock, any_redis: RedisClient
) -> None:
    clock.set(datetime(2026, 11, 30, 18, 0, tzinfo=UTC))
    await spend(ledger, "a", 10)
    keys = BrandKeys.of("growain")
    six_hours = 6 * 3600
    assert abs(await any_redis.ttl(keys.user_day("alice", "20261130"))
               - (six_hours + PERIOD_MARGIN_S)) <= 2
    assert abs(await any_redis.ttl(keys.user_month("alice", "202611"))
               - (six_hours + PERIOD_MARGIN_S)) <= 2
    assert abs(await any_redis.ttl(keys.brand_month("202611"))
               - (six_hours + PERIOD_MARGIN_S)) <= 2
    assert await any_redis.ttl(keys.conversation("a")) > 80 * 24 * 3600
    assert await any_redis.ttl(keys.lease("a")) > 0


@pytest.mark.parametrize(("tokens", "late"), [(10, False), (10, True), (0, False)])
async def test_a_settle_gives_a_vanished_period_key_its_ttl_back(
    ledger: BudgetLedger, clock: ManualClock, any_redis: RedisClient, tokens: int, late: bool
) -> None:
    await ledger.reserve(request("r1", tokens, LIMITS))
    day_key = BrandKeys.of("growain").user_day("alice", "20261128")
    await any_redis.delete(day_key)  # as if its period (and margin) had ended
    if late:
        clock.advance(121)
    assert await ledger.settle(brand="growain", request_id="r1", actual_tokens=7)
    assert await any_redis.hget(day_key, "used") == b"7"
    assert await any_redis.ttl(day_key) > 0
