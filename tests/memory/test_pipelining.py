"""Auto-pipelining: concurrent calls share round trips; errors stay with their callers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memory.pipelining import AutoPipeline
from memory.redis_client import RedisClient, connect_pipeline_client, connect_redis
from tests.redis_server import free_port


async def test_a_flush_under_concurrent_load_loses_no_call(any_redis: RedisClient) -> None:
    runner = AutoPipeline(any_redis, max_batch=16)
    script = runner.register("return redis.call('INCR', KEYS[1])")
    await runner.run(script, ["{t}:n"], [])
    await any_redis.script_flush()
    replies = await asyncio.gather(*(runner.run(script, ["{t}:n"], []) for _ in range(100)))
    assert sorted(replies) == list(range(2, 102))


async def test_concurrent_calls_share_round_trips(redis_client: RedisClient) -> None:
    runner = AutoPipeline(redis_client)
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
    runner = AutoPipeline(any_redis)
    failing = runner.register("return redis.error_reply('no budget for you')")
    fine = runner.register("return 1")
    outcomes = await asyncio.gather(runner.run(failing, [], []), runner.run(fine, [], []),
                                    return_exceptions=True)
    assert isinstance(outcomes[0], ResponseError)
    assert outcomes[1] == 1


async def test_a_connection_failure_reaches_every_caller() -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    runner = AutoPipeline(client)
    script = runner.register("return 1")
    outcomes = await asyncio.gather(*(runner.run(script, [], []) for _ in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    await client.aclose()


async def test_a_call_cancelled_before_it_left_is_not_sent(any_redis: RedisClient) -> None:
    runner = AutoPipeline(any_redis)
    script = runner.register("return redis.call('INCR', KEYS[1])")
    calls = [asyncio.ensure_future(runner.run(script, ["{t}:n"], [])) for _ in range(10)]
    await asyncio.sleep(0)  # all ten are queued; the flusher has not run yet
    calls[3].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert sorted(d for d in done if isinstance(d, int)) == list(range(1, 10))
    assert await any_redis.get("{t}:n") == b"9"


class HoldingClient:
    """Delegates to a client; a pipeline, once executed, holds its replies until
    ``release`` is set (``ran`` says it has run): the caller can leave in between."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self.ran = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, *, transaction: bool) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        execute = pipe.execute

        async def holding_execute(raise_on_error: bool = True) -> Any:
            replies = await execute(raise_on_error=raise_on_error)
            self.ran.set()
            await self.release.wait()
            return replies

        pipe.execute = holding_execute  # type: ignore[method-assign]
        return pipe


async def test_a_call_cancelled_in_flight_still_runs(any_redis: RedisClient) -> None:
    client = HoldingClient(any_redis)
    runner = AutoPipeline(client)  # type: ignore[arg-type]
    script = runner.register("return redis.call('INCR', KEYS[1])")
    first = asyncio.ensure_future(runner.run(script, ["{t}:n"], []))
    await client.ran.wait()  # the script ran; its reply has not reached the caller
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    client.release.set()  # the flusher delivers to nobody, and goes on serving others
    assert await runner.run(script, ["{t}:n"], []) == 2


async def test_a_bad_argument_fails_its_call_instead_of_hanging(any_redis: RedisClient) -> None:
    runner = AutoPipeline(any_redis)
    script = runner.register("return 1")
    with pytest.raises(DataError):
        await runner.run(script, [], [{"not": "encodable"}])
    assert await runner.run(script, [], []) == 1


async def test_commands_scripts_and_groups_share_one_round_trip(
        redis_client: RedisClient) -> None:
    pipeline = AutoPipeline(redis_client)
    script = pipeline.register("return redis.call('INCR', KEYS[1])")
    await redis_client.hset("{p}:h", mapping={"a": "1"})
    await pipeline.run(script, ["{p}:n"], [])  # loaded by now
    await redis_client.config_resetstat()
    mapping, counted, grouped = await asyncio.gather(
        pipeline.command("HGETALL", "{p}:h"),
        pipeline.run(script, ["{p}:n"], []),
        pipeline.group([("SET", "{p}:s", "v"), ("GET", "{p}:s"), ("EXISTS", "{p}:none")]))
    assert mapping == {b"a": b"1"}  # redis-py's reply callbacks apply, as on the client
    assert counted == 2
    assert grouped == [True, b"v", 0]
    stats = await redis_client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
             if k != "cmdstat_config|resetstat"}
    # Each command once (INCR inside the script); never wrapped in MULTI/EXEC.
    assert calls == {"hgetall": 1, "evalsha": 1, "incr": 1, "set": 1, "get": 1, "exists": 1}


async def test_an_error_in_a_group_reaches_its_caller_only(any_redis: RedisClient) -> None:
    pipeline = AutoPipeline(any_redis)
    await any_redis.set("{p}:str", "x")
    bad, good = await asyncio.gather(
        pipeline.group([("GET", "{p}:str"), ("LRANGE", "{p}:str", 0, -1)]),
        pipeline.command("GET", "{p}:str"), return_exceptions=True)
    assert isinstance(bad, ResponseError)  # WRONGTYPE
    assert good == b"x"


async def test_a_burst_needs_few_pipelines(redis_client: RedisClient) -> None:
    """200 concurrent callers: one flusher takes what is queued, so round trips stay few."""
    pipeline = AutoPipeline(redis_client)
    sent = 0
    real = redis_client.pipeline

    def counting(*, transaction: bool) -> Any:
        nonlocal sent
        sent += 1
        return real(transaction=transaction)

    pipeline.redis = type("Counting", (), {"pipeline": staticmethod(counting)})()  # type: ignore[assignment]
    replies = await asyncio.gather(*(pipeline.command("ECHO", str(i)) for i in range(200)))
    assert replies == [str(i).encode() for i in range(200)]
    assert sent == 1


# Keeps the server busy for ARGV[1] ms (a script cannot sleep; it can spin on TIME).
_SPIN = """
local start = redis.call('TIME')
local begun = tonumber(start[1]) * 1000 + tonumber(start[2]) / 1000
repeat
  local now = redis.call('TIME')
until tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000 - begun >= tonumber(ARGV[1])
return 1
"""


async def test_the_pipeline_client_reads_replies_without_per_reply_timeouts(
        redis_url: str) -> None:
    # redis-py lets a URL's own options override keyword arguments: not this one.
    client = connect_pipeline_client(f"{redis_url}?socket_timeout=3")
    try:
        assert client.connection_pool.connection_kwargs["socket_timeout"] is None
        assert await client.ping()
    finally:
        await client.aclose()


def test_embedded_and_cluster_urls_need_no_pipeline_client_of_their_own() -> None:
    assert connect_pipeline_client("memory://pipeline-test") is None
    assert connect_pipeline_client("redis+cluster://127.0.0.1:7000") is None
    assert connect_pipeline_client("rediss+cluster://127.0.0.1:7000") is None


async def test_a_batch_that_outlives_its_bound_fails_its_calls_then_the_pipeline_recovers(
        redis_url: str) -> None:
    client = connect_pipeline_client(redis_url)
    runner = AutoPipeline(client, timeout_s=0.2)
    spin = runner.register(_SPIN)
    fine = runner.register("return ARGV[1]")
    try:
        assert await runner.run(spin, [], [1]) == 1  # loaded, and quick enough
        outcomes = await asyncio.gather(runner.run(spin, [], [600]),
                                        runner.run(fine, [], ["x"]), return_exceptions=True)
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
        # The interrupted connection was dropped: later replies are not the old ones.
        await wait_for_idle_server(client)
        assert await asyncio.gather(*(runner.run(fine, [], [i]) for i in range(20))) == [
            str(i).encode() for i in range(20)]
    finally:
        await client.aclose()


async def test_a_script_rerun_after_noscript_is_bounded_too(redis_url: str) -> None:
    """The server lost its scripts (a restart, SCRIPT FLUSH): the load and the rerun that
    follow are bounded like the batch, or a stalled server would hold the flusher."""
    client = connect_pipeline_client(redis_url)
    runner = AutoPipeline(client, timeout_s=0.2)
    spin = runner.register(_SPIN)
    fine = runner.register("return ARGV[1]")
    try:
        await client.script_flush()
        with pytest.raises(RedisTimeoutError):
            await runner.run(spin, [], [600])  # NOSCRIPT, loaded, rerun: spins past 0.2 s
        await wait_for_idle_server(client)
        assert await runner.run(fine, [], ["after"]) == b"after"
    finally:
        await client.aclose()


async def wait_for_idle_server(client: RedisClient) -> None:
    """Until the spinning script has ended (the server answers BUSY until then)."""
    while True:
        try:
            await client.ping()
            return
        except ResponseError:  # BUSY: the script still runs
            await asyncio.sleep(0.05)
