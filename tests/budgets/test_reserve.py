"""Reservations: all or nothing across four scopes, never above a limit under concurrency."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from budgets import (
    SCOPES,
    UNLIMITED_REMAINING,
    BudgetLedger,
    BudgetLimits,
    Refused,
    RequestIdReused,
    ReservationRequest,
    Reserved,
    Scope,
)
from memory.redis_client import RedisClient
from tests.budgets.conftest import UNLIMITED_LIMITS, ManualClock, request

Clients = Callable[[int], list[RedisClient]]


def only(scope: Scope, limit: int) -> BudgetLimits:
    values = {s: (limit if s == scope else -1) for s in SCOPES}
    return BudgetLimits(**values)


def contender(scope: Scope, i: int, tokens: int, limits: BudgetLimits) -> ReservationRequest:
    """Requests that share the key of ``scope`` and, where possible, nothing else."""
    user = "alice" if scope in ("user_day", "user_month") else f"user-{i}"
    conversation = "shared" if scope == "conversation" else f"conv-{i}"
    return request(f"req-{i}", tokens, limits, user_id=user, conversation_id=conversation)


async def committed(ledger: BudgetLedger, scope: Scope, limit: int) -> int:
    if scope == "conversation":
        return limit - await ledger.conversation_remaining("growain", "shared", limit)
    if scope == "brand_month":
        return (await ledger.brand_usage("growain")).committed
    view = await ledger.usage("growain", "alice")
    return view.user_day.committed if scope == "user_day" else view.user_month.committed


async def watch(ledger: BudgetLedger, scope: Scope, limit: int, done: asyncio.Event) -> int:
    """The highest committed usage seen while the contenders run."""
    highest = 0
    while not done.is_set():
        highest = max(highest, await committed(ledger, scope, limit))
        await asyncio.sleep(0)
    return highest


@pytest.mark.parametrize("scope", SCOPES)
async def test_concurrent_reservations_admit_exactly_what_fits(
    scope: Scope, client_factory: Clients, clock: ManualClock
) -> None:
    tokens, fits, contenders = 7, 37, 200
    limit = tokens * fits
    ledgers = [BudgetLedger(c, clock=clock) for c in client_factory(8)]
    done = asyncio.Event()

    async def contend(i: int) -> Reserved | Refused:
        return await ledgers[i % 8].reserve(contender(scope, i, tokens, only(scope, limit)))

    async def run_all() -> list[Reserved | Refused]:
        try:
            return await asyncio.gather(*(contend(i) for i in range(contenders)))
        finally:
            done.set()

    outcomes, highest = await asyncio.gather(run_all(), watch(ledgers[0], scope, limit, done))
    refused = [o for o in outcomes if isinstance(o, Refused)]
    assert len(outcomes) - len(refused) == fits
    assert {(r.scope, r.limit) for r in refused} == {(scope, limit)}
    assert all(r.committed <= limit for r in refused)
    assert highest <= limit
    assert await committed(ledgers[0], scope, limit) == limit


async def test_committed_usage_stays_within_limit_while_settling(
    client_factory: Clients, clock: ManualClock
) -> None:
    limit, contenders = 300, 120
    limits = only("brand_month", limit)
    ledgers = [BudgetLedger(c, clock=clock) for c in client_factory(8)]
    actuals = random.Random(7).choices(range(11), k=contenders)
    done = asyncio.Event()

    async def turn(i: int) -> int:
        ledger = ledgers[i % 8]
        outcome = await ledger.reserve(request(f"r{i}", 10, limits, user_id=f"u{i}",
                                               conversation_id=f"c{i}"))
        if isinstance(outcome, Refused):
            return 0
        assert await ledger.settle(brand="growain", request_id=f"r{i}",
                                   actual_tokens=actuals[i])
        return actuals[i]

    async def run_all() -> list[int]:
        try:
            return await asyncio.gather(*(turn(i) for i in range(contenders)))
        finally:
            done.set()

    billed, highest = await asyncio.gather(
        run_all(), watch(ledgers[0], "brand_month", limit, done))
    usage = await ledgers[0].brand_usage("growain")
    assert highest <= limit
    assert usage.reserved == 0
    assert usage.used == sum(billed) <= limit


async def test_first_overflowing_scope_is_reported(ledger: BudgetLedger) -> None:
    tight = BudgetLimits(user_day=100, user_month=100, brand_month=100, conversation=100)
    assert await ledger.reserve(request("r1", 60, tight)) == Reserved("r1", 60)
    assert await ledger.reserve(request("r2", 50, tight)) == Refused("user_day", 100, 60)
    loose_day = BudgetLimits(user_day=-1, user_month=1000, brand_month=100, conversation=100)
    assert await ledger.reserve(request("r3", 50, loose_day)) == Refused("brand_month", 100, 60)
    conv_only = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=100)
    assert await ledger.reserve(request("r4", 50, conv_only)) == Refused("conversation", 100, 60)
    month = BudgetLimits(user_day=-1, user_month=80, brand_month=-1, conversation=-1)
    assert await ledger.reserve(request("r5", 50, month)) == Refused("user_month", 80, 60)


async def test_a_refusal_writes_nothing(ledger: BudgetLedger) -> None:
    limits = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=10)
    assert isinstance(await ledger.reserve(request("r1", 11, limits)), Refused)
    view = await ledger.usage("growain", "alice")
    assert view.user_day.committed == view.brand_month.committed == 0
    assert await ledger.reserve(request("r1", 10, limits)) == Reserved("r1", 10)


async def test_unlimited_scopes_admit_everything_and_still_count(ledger: BudgetLedger) -> None:
    for i in range(5):
        assert await ledger.reserve(request(f"r{i}", 10**9, UNLIMITED_LIMITS)) == Reserved(
            f"r{i}", 10**9)
    view = await ledger.usage("growain", "alice")
    assert view.user_month.reserved == view.brand_month.reserved == 5 * 10**9
    assert await ledger.conversation_remaining("growain", "conv-1", -1) == UNLIMITED_REMAINING


async def test_zero_limit_refuses(ledger: BudgetLedger) -> None:
    limits = BudgetLimits(user_day=0, user_month=-1, brand_month=-1, conversation=-1)
    assert await ledger.reserve(request("r1", 1, limits)) == Refused("user_day", 0, 0)


async def test_a_retried_reserve_reserves_once(ledger: BudgetLedger) -> None:
    first = await ledger.reserve(request("r1", 40))
    again = await ledger.reserve(request("r1", 40))
    assert first == again == Reserved("r1", 40)
    assert (await ledger.usage("growain", "alice")).user_day.reserved == 40
    assert await ledger.settle(brand="growain", request_id="r1", actual_tokens=30)
    with pytest.raises(RequestIdReused):
        await ledger.reserve(request("r1", 40))


async def test_conversation_remaining(ledger: BudgetLedger) -> None:
    limits = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=100)
    assert await ledger.conversation_remaining("growain", "conv-1", 100) == 100
    await ledger.reserve(request("r1", 30, limits))
    assert await ledger.conversation_remaining("growain", "conv-1", 100) == 70
    await ledger.settle(brand="growain", request_id="r1", actual_tokens=120)
    assert await ledger.conversation_remaining("growain", "conv-1", 100) == 0


async def test_a_reservation_shrinks_to_what_the_conversation_has_left(
        ledger: BudgetLedger) -> None:
    limits = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=100)

    def shrinking(request_id: str, tokens: int, least: int) -> ReservationRequest:
        return ReservationRequest(brand="growain", user_id="alice", conversation_id="conv-1",
                                  request_id=request_id, tokens=tokens, limits=limits,
                                  least_tokens=least)

    assert await ledger.reserve(shrinking("r1", 70, 11)) == Reserved("r1", 70)
    assert await ledger.reserve(shrinking("r2", 70, 11)) == Reserved("r2", 30)  # 30 left
    assert await ledger.conversation_remaining("growain", "conv-1", 100) == 0
    refused = await ledger.reserve(shrinking("r3", 70, 11))  # nothing left: refused by name
    assert refused == Refused(scope="conversation", limit=100, committed=100)
    assert await ledger.reserve(shrinking("r2", 70, 11)) == Reserved("r2", 30)  # a retry
    assert await ledger.settle(brand="growain", request_id="r2", actual_tokens=12)
    assert (await ledger.usage("growain", "alice")).user_day.committed == 82


async def test_shrinking_reservations_never_exceed_the_conversation(
        client_factory: Clients) -> None:
    """Many processes' turns race for one conversation's last tokens."""
    limits = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=1_000)
    ledgers = [BudgetLedger(c) for c in client_factory(4)]
    outcomes = await asyncio.gather(*(ledgers[i % 4].reserve(ReservationRequest(
        brand="growain", user_id=f"u{i}", conversation_id="shared", request_id=f"q{i}",
        tokens=90, limits=limits, least_tokens=20)) for i in range(60)))
    granted = [o.tokens for o in outcomes if isinstance(o, Reserved)]
    assert sum(granted) <= 1_000
    assert all(20 <= t <= 90 for t in granted)
    assert 1_000 - sum(granted) < 20  # what is left could not hold another turn
    assert await ledgers[0].conversation_remaining("growain", "shared", 1_000) == (
        1_000 - sum(granted))


async def test_tenants_and_hostile_ids_are_kept_apart(ledger: BudgetLedger) -> None:
    limits = BudgetLimits(user_day=10, user_month=-1, brand_month=-1, conversation=-1)
    for brand in ("growain", "mindagain"):
        for user in ("a", "a}:b", "a%7D%3Ab", "{growain}"):
            outcome = await ledger.reserve(request(f"{brand}/{user}", 10, limits, brand=brand,
                                                   user_id=user))
            assert outcome == Reserved(f"{brand}/{user}", 10)
    assert (await ledger.usage("growain", "a")).user_day.reserved == 10
    assert (await ledger.brand_usage("mindagain")).reserved == 40


async def test_invalid_inputs_are_refused_early() -> None:
    with pytest.raises(ValueError):
        BudgetLimits(user_day=-2, user_month=1, brand_month=1, conversation=1)
    with pytest.raises(ValueError):
        request("r", -1)
    with pytest.raises(TypeError):  # the scripts take whole numbers only
        request("r", 300.0)  # type: ignore[arg-type]
