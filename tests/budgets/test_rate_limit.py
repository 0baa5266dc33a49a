"""GCRA rate limits per user per minute and per brand per second, checked atomically."""

from __future__ import annotations

import asyncio

import pytest

from budgets import RateDecision, RateLimiter
from budgets.ratelimit import emission_interval_us
from memory.redis_client import RedisClient
from tests.budgets.conftest import ManualClock


@pytest.fixture
def limiter(any_redis: RedisClient, clock: ManualClock) -> RateLimiter:
    return RateLimiter(any_redis, clock=clock)


async def check(limiter: RateLimiter, user: str = "alice", *, per_minute: int = 5,
                per_second: int = 1000, brand: str = "growain") -> RateDecision:
    return await limiter.check(brand=brand, user_id=user, per_minute_per_user=per_minute,
                               per_second_per_brand=per_second)


async def test_a_user_gets_their_burst_then_waits(limiter: RateLimiter,
                                                  clock: ManualClock) -> None:
    assert [(await check(limiter)).allowed for _ in range(5)] == [True] * 5
    refused = await check(limiter)
    assert refused == RateDecision(allowed=False, retry_after_ms=12_000, scope="user")
    clock.advance(11.999)
    assert not (await check(limiter)).allowed
    clock.advance(0.001)
    assert (await check(limiter)).allowed
    assert not (await check(limiter)).allowed


async def test_the_bucket_refills_with_the_clock(limiter: RateLimiter,
                                                 clock: ManualClock) -> None:
    for _ in range(5):
        await check(limiter)
    clock.advance(60)
    assert [(await check(limiter)).allowed for _ in range(6)] == [True] * 5 + [False]


async def test_the_brand_limit_spans_users(limiter: RateLimiter, clock: ManualClock) -> None:
    decisions = [await check(limiter, f"user-{i}", per_second=3) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].scope == "brand"
    assert 0 < decisions[-1].retry_after_ms <= 334
    clock.advance(decisions[-1].retry_after_ms / 1000)
    assert (await check(limiter, "user-9", per_second=3)).allowed


async def test_a_refused_request_consumes_neither_limit(limiter: RateLimiter) -> None:
    for i in range(3):
        assert (await check(limiter, f"other-{i}", per_second=3)).allowed
    assert (await check(limiter, "alice", per_second=3)).scope == "brand"
    # alice's own allowance is untouched: in another brand she still has all five
    decisions = [await check(limiter, "alice", brand="mindagain") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]


async def test_brands_are_limited_apart(limiter: RateLimiter) -> None:
    assert (await check(limiter, per_second=1, brand="growain")).allowed
    assert not (await check(limiter, "bob", per_second=1, brand="growain")).allowed
    assert (await check(limiter, "bob", per_second=1, brand="corefinops")).allowed


async def test_concurrent_checks_admit_exactly_the_burst(limiter: RateLimiter) -> None:
    decisions = await asyncio.gather(*(check(limiter, per_minute=10) for _ in range(60)))
    assert sum(d.allowed for d in decisions) == 10


def test_emission_interval_never_admits_too_many() -> None:
    assert emission_interval_us(60_000_000, 60) == 1_000_000
    assert emission_interval_us(1_000_000, 3) == 333_334
    with pytest.raises(ValueError):
        emission_interval_us(1_000_000, 0)
