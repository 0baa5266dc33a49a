"""Scripts run by SHA, pipelined, and survive a SCRIPT FLUSH (NOSCRIPT reloads them)."""

from __future__ import annotations

import re

import pytest

from budgets import BudgetLedger, RateLimiter, Reserved
from budgets.scripts import script_source
from memory.redis_client import RedisClient
from tests.budgets.conftest import ManualClock, request


async def test_calls_survive_a_script_flush(any_redis: RedisClient, clock: ManualClock) -> None:
    ledger = BudgetLedger(any_redis, clock=clock)
    limiter = RateLimiter(any_redis, clock=clock)
    assert await ledger.reserve(request("r1", 10)) == Reserved("r1", 10)
    await limiter.check(brand="growain", user_id="alice", per_minute_per_user=5,
                        per_second_per_brand=5)
    await any_redis.script_flush()
    assert await ledger.settle(brand="growain", request_id="r1", actual_tokens=7)
    assert await ledger.reserve(request("r2", 10)) == Reserved("r2", 10)
    assert (await ledger.usage("growain", "alice")).user_day.committed == 17
    assert (await limiter.check(brand="growain", user_id="alice", per_minute_per_user=5,
                                per_second_per_brand=5)).allowed


async def test_scripts_are_called_by_sha(redis_client: RedisClient,
                                         clock: ManualClock) -> None:
    await redis_client.config_resetstat()
    ledger = BudgetLedger(redis_client, clock=clock)
    for i in range(5):
        await ledger.reserve(request(f"r{i}", 1))
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 6  # one NOSCRIPT, then one per call
    assert stats["cmdstat_script|load"]["calls"] == 1
    assert "cmdstat_eval" not in stats


@pytest.mark.parametrize("script", ["reserve.lua", "settle.lua", "read.lua", "rate_limit.lua"])
def test_scripts_never_read_the_server_clock(script: str) -> None:
    text = script_source(script, with_prelude=script != "rate_limit.lua")
    assert "redis.call(" in text
    assert not re.search(r"redis\.p?call\(\s*['\"]time['\"]", text, re.IGNORECASE)
