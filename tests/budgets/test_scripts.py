"""Scripts run by SHA, pipelined, and survive a SCRIPT FLUSH (NOSCRIPT reloads them)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError

from budgets import BudgetLedger, RateLimiter, Reserved
from budgets.scripts import ScriptRunner, script_source
from memory.redis_client import RedisClient, connect_redis
from tests.budgets.conftest import ManualClock, request
from tests.redis_server import free_port


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


async def test_a_flush_under_concurrent_load_loses_no_call(any_redis: RedisClient) -> None:
    runner = ScriptRunner(any_redis, max_batch=16)
    script = runner.register("return redis.call('INCR', KEYS[1])")
    await runner.run(script, ["{t}:n"], [])
    await any_redis.script_flush()
    replies = await asyncio.gather(*(runner.run(script, ["{t}:n"], []) for _ in range(100)))
    assert sorted(replies) == list(range(2, 102))


async def test_concurrent_calls_share_round_trips(redis_client: RedisClient) -> None:
    runner = ScriptRunner(redis_client)
    script = runner.register("return ARGV[1]")
    await runner.run(script, [], [0])
    await redis_client.config_resetstat()
    # The server is shared by the session: count only the connections this test adds.
    before = len(await redis_client.client_list())
    replies = await asyncio.gather(*(runner.run(script, [], [i]) for i in range(200)))
    assert replies == [str(i).encode() for i in range(200)]
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 200
    clients = await redis_client.client_list()
    assert len(clients) <= before + 4  # at most max_in_flight pipelines


async def test_a_script_error_reaches_only_its_caller(any_redis: RedisClient) -> None:
    runner = ScriptRunner(any_redis)
    failing = runner.register("return redis.error_reply('no budget for you')")
    fine = runner.register("return 1")
    outcomes = await asyncio.gather(runner.run(failing, [], []), runner.run(fine, [], []),
                                    return_exceptions=True)
    assert isinstance(outcomes[0], ResponseError)
    assert outcomes[1] == 1


async def test_a_connection_failure_reaches_every_caller() -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    runner = ScriptRunner(client)
    script = runner.register("return 1")
    outcomes = await asyncio.gather(*(runner.run(script, [], []) for _ in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    await client.aclose()


async def test_a_call_cancelled_before_it_left_is_not_sent(any_redis: RedisClient) -> None:
    runner = ScriptRunner(any_redis)
    script = runner.register("return redis.call('INCR', KEYS[1])")
    calls = [asyncio.ensure_future(runner.run(script, ["{t}:n"], [])) for _ in range(10)]
    await asyncio.sleep(0)  # all ten are queued; the flusher has not run yet
    calls[3].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert sorted(d for d in done if isinstance(d, int)) == list(range(1, 10))
    assert await any_redis.get("{t}:n") == b"9"


class SignallingClient:
    """Delegates to a client; ``sent`` is set when a pipeline is about to go out."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self.sent = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, *, transaction: bool) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        execute = pipe.execute

        async def signalling_execute(raise_on_error: bool = True) -> Any:
            self.sent.set()
            return await execute(raise_on_error=raise_on_error)

        pipe.execute = signalling_execute  # type: ignore[method-assign]
        return pipe


async def test_a_call_cancelled_in_flight_still_runs(any_redis: RedisClient) -> None:
    client = SignallingClient(any_redis)
    runner = ScriptRunner(client)  # type: ignore[arg-type]
    script = runner.register("return redis.call('INCR', KEYS[1])")
    first = asyncio.ensure_future(runner.run(script, ["{t}:n"], []))
    await client.sent.wait()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert await runner.run(script, ["{t}:n"], []) == 2


async def test_a_bad_argument_fails_its_call_instead_of_hanging(any_redis: RedisClient) -> None:
    runner = ScriptRunner(any_redis)
    script = runner.register("return 1")
    with pytest.raises(DataError):
        await runner.run(script, [], [{"not": "encodable"}])
    assert await runner.run(script, [], []) == 1
