"""Auto-pipelining: concurrent calls share round trips; errors stay with their callers."""

from __future__ import annotations

import asyncio
import itertools
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memory import pipelining
from memory.pipelining import AutoPipeline
from memory.redis_client import RedisClient, connect_pipeline_client, connect_redis
from tests.redis_server import free_port

_names = itertools.count()


@dataclass
class Backend:
    """A client and how its auto-pipeline sends batches (``hold``: on a kept connection,
    as the runtime's is on a real server; else through redis-py's Pipeline)."""

    client: RedisClient
    hold: bool

    def pipeline(self, **options: Any) -> AutoPipeline:
        return AutoPipeline(self.client, hold_connection=self.hold, **options)


def _backend(mode: str, url: str) -> Backend:
    if mode == "held":
        client = connect_pipeline_client(url)
        assert client is not None
        return Backend(client, hold=True)
    return Backend(connect_redis(url), hold=False)


@pytest.fixture(params=["held", "pooled", "memory"])
def backend_mode(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Every way an auto-pipeline runs: a real server's kept connection, a real server
    through redis-py's Pipeline, the embedded server."""
    if request.param == "memory":
        return "memory", f"memory://pipelining-{next(_names)}"
    return request.param, request.getfixturevalue("redis_url")


@pytest.fixture(params=["held", "pooled"])
def real_backend_mode(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, request.getfixturevalue("redis_url")


@pytest.fixture
async def backend(backend_mode: tuple[str, str]) -> AsyncIterator[Backend]:
    made = _backend(*backend_mode)
    yield made
    await made.client.aclose()


@pytest.fixture
async def real_backend(real_backend_mode: tuple[str, str]) -> AsyncIterator[Backend]:
    made = _backend(*real_backend_mode)
    yield made
    await made.client.aclose()


async def test_a_flush_under_concurrent_load_loses_no_call(backend: Backend) -> None:
    runner = backend.pipeline(max_batch=16)
    script = runner.register("return redis.call('INCR', KEYS[1])")
    await runner.run(script, ["{t}:n"], [])
    await backend.client.script_flush()
    replies = await asyncio.gather(*(runner.run(script, ["{t}:n"], []) for _ in range(100)))
    assert sorted(replies) == list(range(2, 102))


async def test_concurrent_calls_share_round_trips(real_backend: Backend) -> None:
    redis_client = real_backend.client
    runner = real_backend.pipeline()
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


async def test_a_script_error_reaches_only_its_caller(backend: Backend) -> None:
    runner = backend.pipeline()
    failing = runner.register("return redis.error_reply('no budget for you')")
    fine = runner.register("return 1")
    outcomes = await asyncio.gather(runner.run(failing, [], []), runner.run(fine, [], []),
                                    return_exceptions=True)
    assert isinstance(outcomes[0], ResponseError)
    assert outcomes[1] == 1


@pytest.mark.parametrize("hold", [True, False], ids=["held", "pooled"])
async def test_a_connection_failure_reaches_every_caller(hold: bool) -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    runner = AutoPipeline(client, hold_connection=hold)
    script = runner.register("return 1")
    outcomes = await asyncio.gather(*(runner.run(script, [], []) for _ in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    await client.aclose()


async def test_a_call_cancelled_before_it_left_is_not_sent(backend: Backend) -> None:
    any_redis = backend.client
    runner = backend.pipeline()
    script = runner.register("return redis.call('INCR', KEYS[1])")
    calls = [runner.run(script, ["{t}:n"], []) for _ in range(10)]
    calls[3].cancel()  # all ten are queued (when called); the flusher has not run yet
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


async def test_a_bad_argument_fails_its_call_instead_of_hanging(backend: Backend) -> None:
    runner = backend.pipeline()
    script = runner.register("return 1")
    with pytest.raises(DataError):
        await runner.run(script, [], [{"not": "encodable"}])
    assert await runner.run(script, [], []) == 1


async def test_commands_scripts_and_groups_share_one_round_trip(
        real_backend: Backend) -> None:
    redis_client = real_backend.client
    pipeline = real_backend.pipeline()
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


async def test_an_error_in_a_group_reaches_its_caller_only(backend: Backend) -> None:
    any_redis = backend.client
    pipeline = backend.pipeline()
    await any_redis.set("{p}:str", "x")
    bad, good = await asyncio.gather(
        pipeline.group([("GET", "{p}:str"), ("LRANGE", "{p}:str", 0, -1)]),
        pipeline.command("GET", "{p}:str"), return_exceptions=True)
    assert isinstance(bad, ResponseError)  # WRONGTYPE
    assert good == b"x"


async def test_a_burst_needs_few_pipelines(redis_client: RedisClient) -> None:
    """200 concurrent callers: one flusher takes what is queued, so round trips stay few
    (through redis-py's Pipeline; the kept connection's writes are counted below)."""
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


@pytest.mark.parametrize("hold", [True, False], ids=["held", "pooled"])
async def test_a_batch_that_outlives_its_bound_fails_its_calls_then_the_pipeline_recovers(
        redis_url: str, hold: bool) -> None:
    async with pipeline_on(redis_url, timeout_s=0.2, hold_connection=hold) as (client, runner):
        spin = runner.register(_SPIN)
        fine = runner.register("return ARGV[1]")
        assert await runner.run(spin, [], [1]) == 1  # loaded, and quick enough
        outcomes = await asyncio.gather(runner.run(spin, [], [600]),
                                        runner.run(fine, [], ["x"]), return_exceptions=True)
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
        # The interrupted connection was dropped: later replies are not the old ones.
        await wait_for_idle_server(client)
        assert await asyncio.gather(*(runner.run(fine, [], [i]) for i in range(20))) == [
            str(i).encode() for i in range(20)]


@pytest.mark.parametrize("hold", [True, False], ids=["held", "pooled"])
async def test_a_script_rerun_after_noscript_is_bounded_too(redis_url: str, hold: bool) -> None:
    """The server lost its scripts (a restart, SCRIPT FLUSH): the load and the rerun that
    follow are bounded like the batch, or a stalled server would hold the flusher."""
    async with pipeline_on(redis_url, timeout_s=0.2, hold_connection=hold) as (client, runner):
        spin = runner.register(_SPIN)
        fine = runner.register("return ARGV[1]")
        await client.script_flush()
        with pytest.raises(RedisTimeoutError):
            await runner.run(spin, [], [600])  # NOSCRIPT, loaded, rerun: spins past 0.2 s
        await wait_for_idle_server(client)
        assert await runner.run(fine, [], ["after"]) == b"after"


async def wait_for_idle_server(client: RedisClient) -> None:
    """Until the spinning script has ended (the server answers BUSY until then)."""
    while True:
        try:
            await client.ping()
            return
        except ResponseError:  # BUSY: the script still runs
            await asyncio.sleep(0.05)


@asynccontextmanager
async def pipeline_on(url: str, *, client_options: dict[str, Any] | None = None,
                      **options: Any) -> AsyncIterator[tuple[RedisClient, AutoPipeline]]:
    """The runtime's pipeline client of ``url`` (closed after; with redis-py's
    ``client_options``, if given) and an auto-pipeline on it."""
    client = connect_pipeline_client(url, **(client_options or {}))
    assert client is not None
    try:
        yield client, AutoPipeline(client, **options)
    finally:
        await client.aclose()


def held(pipeline: AutoPipeline) -> list[Any]:
    """The connections a pipeline keeps between batches."""
    return [connection for connection, _ in pipeline._held]


def in_use(client: RedisClient) -> int:
    """Connections taken from the client's pool and not given back."""
    return len(client.connection_pool._in_use_connections)  # type: ignore[attr-defined]


async def close_kept_connection(pipeline: AutoPipeline, redis_client: RedisClient
                                ) -> tuple[Any, Any]:
    """The server closes the pipeline's kept connection while it is idle; returns that
    connection, once its close has been read, and the id it had."""
    first = await pipeline.command("CLIENT", "ID")
    [kept] = held(pipeline)
    assert await redis_client.client_kill_filter(_id=first) == 1
    async with asyncio.timeout(5):  # nothing was sent to it: it reads the EOF only
        assert await kept._reader.read(1) == b""  # type: ignore[attr-defined]
    return kept, first


async def test_a_kept_connection_serves_every_batch(redis_url: str) -> None:
    async with pipeline_on(redis_url, hold_connection=True) as (client, pipeline):
        ids = [await pipeline.command("CLIENT", "ID") for _ in range(5)]
        bursts = [await asyncio.gather(*(pipeline.command("CLIENT", "ID") for _ in range(50)))
                  for _ in range(3)]
        assert {*ids, *(i for burst in bursts for i in burst)} == {ids[0]}
        assert in_use(client) == 1  # taken from the pool once, never given back between


async def test_a_dropped_kept_connection_is_opened_again(redis_url: str,
                                                         redis_client: RedisClient) -> None:
    async with pipeline_on(redis_url, hold_connection=True) as (_, pipeline):
        _, first = await close_kept_connection(pipeline, redis_client)
        assert await pipeline.command("ECHO", "after") == b"after"  # reopened, not failed
        assert await pipeline.command("CLIENT", "ID") != first


async def test_a_burst_is_one_write_on_the_kept_connection(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with pipeline_on(redis_url, hold_connection=True) as (client, pipeline):
        writes = 0
        connection_class = client.connection_pool.connection_class
        send = connection_class.send_packed_command

        async def counting(self: Any, command: Any, check_health: bool = True) -> None:
            nonlocal writes
            writes += 1
            await send(self, command, check_health)

        await pipeline.command("PING")  # connected (connecting sends commands of its own)
        monkeypatch.setattr(connection_class, "send_packed_command", counting)
        replies = await asyncio.gather(*(pipeline.command("ECHO", str(i)) for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
        assert writes == 1


async def test_a_bound_that_fires_while_a_closed_connection_is_reopened_leaks_nothing(
        redis_url: str, redis_client: RedisClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's bound fires while a kept connection is being disconnected (its close
    stalls): the connection stays kept, and the pool lends no second one."""
    async with pipeline_on(redis_url, hold_connection=True, timeout_s=0.2) as (client,
                                                                               pipeline):
        connection_class = client.connection_pool.connection_class
        disconnect = connection_class.disconnect
        stall = asyncio.Event()

        async def stalling(self: Any, *args: Any, **kwargs: Any) -> None:
            await stall.wait()
            await disconnect(self, *args, **kwargs)

        try:
            kept, _ = await close_kept_connection(pipeline, redis_client)
            monkeypatch.setattr(connection_class, "disconnect", stalling)
            with pytest.raises(RedisTimeoutError):
                await pipeline.command("ECHO", "stalled")
            assert held(pipeline) == [kept] and in_use(client) == 1
            stall.set()
            monkeypatch.setattr(connection_class, "disconnect", disconnect)
            assert await pipeline.command("ECHO", "after") == b"after"
            assert held(pipeline) == [kept] and in_use(client) == 1
        finally:
            stall.set()


async def test_a_connection_closed_while_the_process_was_frozen_is_probed_and_reopened(
        redis_url: str) -> None:
    """The server closes a kept connection while the event loop cannot run (a Lambda
    between invocations; here the test blocks the loop): the close is in the socket but
    unseen. After a long idle the connection is PINGed first, and reopened."""
    killer = redis.Redis.from_url(redis_url)  # a blocking client: the loop does not run
    try:
        async with pipeline_on(redis_url, hold_connection=True, idle_probe_s=0.0) as (
                _, pipeline):
            first = await pipeline.command("CLIENT", "ID")
            [kept] = held(pipeline)
            socket = kept._writer.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert killer.client_kill_filter(_id=first) == 1
            readable, _, _ = select.select([socket.fileno()], [], [], 5)  # the FIN arrived
            assert readable and not kept._reader.at_eof()  # type: ignore[attr-defined]
            assert await pipeline.command("ECHO", "after") == b"after"  # not a failed batch
            assert await pipeline.command("CLIENT", "ID") != first
    finally:
        killer.close()


def commands_sent(client: RedisClient, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The names of the commands redis-py sends one by one on ``client``'s connections from
    now on (its own PINGs among them; a pipelined batch goes out packed, not here)."""
    connection_class = client.connection_pool.connection_class
    send_command = connection_class.send_command
    sent: list[Any] = []

    async def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        sent.append(args[0])
        await send_command(self, *args, **kwargs)

    monkeypatch.setattr(connection_class, "send_command", recording)
    return sent


@pytest.mark.parametrize(("idle_probe_s", "pings"), [(60.0, 0), (0.0, 5)])
async def test_only_a_long_idle_connection_is_probed(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, idle_probe_s: float,
        pings: int) -> None:
    async with pipeline_on(redis_url, hold_connection=True, idle_probe_s=idle_probe_s) as (
            client, pipeline):
        await pipeline.command("ECHO", "connect")
        sent = commands_sent(client, monkeypatch)
        for i in range(5):
            assert await pipeline.command("ECHO", str(i)) == str(i).encode()
        assert sent.count("PING") == pings


async def test_a_refused_probe_still_shows_the_connection_alive(
        redis_url: str, redis_client: RedisClient) -> None:
    """A user whose ACL forbids PING: the error reply is an answer, the batch goes on."""
    await redis_client.acl_setuser("no-ping", enabled=True, passwords=["+secret"],
                                   keys=["*"], commands=["+@all", "-ping"], reset=True)
    try:
        async with pipeline_on(redis_url.replace("redis://", "redis://no-ping:secret@"),
                               hold_connection=True, idle_probe_s=0.0) as (_, pipeline):
            first = await pipeline.command("CLIENT", "ID")
            assert await pipeline.command("ECHO", "after") == b"after"
            assert await pipeline.command("CLIENT", "ID") == first  # not reopened
    finally:
        await redis_client.acl_deluser("no-ping")


async def test_a_probe_without_answer_reopens_the_connection(
        redis_url: str, redis_client: RedisClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that stopped answering (here: the server pauses its clients longer than
    the probe waits): the kept connection is given up and a new one carries the batch."""
    monkeypatch.setattr(pipelining, "PROBE_TIMEOUT_S", 0.1)
    async with pipeline_on(redis_url, hold_connection=True, idle_probe_s=0.0) as (
            _, pipeline):
        first = await pipeline.command("CLIENT", "ID")
        await redis_client.execute_command("CLIENT", "PAUSE", 400, "ALL")
        assert await pipeline.command("ECHO", "after") == b"after"  # once the pause ends
        assert await pipeline.command("CLIENT", "ID") != first


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("direct", [True, False], ids=["from the reader", "via the connection"])
async def test_a_batch_of_replies_larger_than_one_read_comes_back_whole(
        redis_url: str, protocol: int, direct: bool, direct_reads: list[int]) -> None:
    """A batch whose replies span many socket reads, with an error reply inside, comes
    back in order, on RESP2 and on RESP3 (redis-py 8's default); read from redis-py's
    hiredis reader directly, or, with redis-py's own Python parser, through the
    connection."""
    python_parser = _AsyncRESP2Parser if protocol == 2 else _AsyncRESP3Parser
    async with pipeline_on(
            f"{redis_url}?protocol={protocol}", hold_connection=True,
            client_options=None if direct else {"parser_class": python_parser}) as (
            client, pipeline):
        await client.set("{t}:text", "not a number")
        big = [f"{i:04d}" + "x" * 20_000 for i in range(40)]  # 800 kB of replies
        calls = [pipeline.command("ECHO", text) for text in big]
        calls.insert(20, pipeline.command("INCR", "{t}:text"))
        replies = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(replies.pop(20), ResponseError)
        assert replies == [text.encode() for text in big]
        assert await pipeline.command("HGETALL", "{t}:none") == {}  # callbacks still apply
    assert (direct_reads[0] > 0) is direct


async def test_a_client_read_timeout_still_bounds_each_reply(
        redis_url: str, redis_client: RedisClient) -> None:
    """A client with a read timeout of its own (not the runtime's pipeline client, which
    has none) keeps it on a held connection: a server that stops answering fails the
    call with redis-py's TimeoutError, even with no bound on the batch."""
    client = connect_redis(f"{redis_url}?socket_timeout=0.2")
    pipeline = AutoPipeline(client, hold_connection=True)
    try:
        assert await pipeline.command("ECHO", "before") == b"before"
        await redis_client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        with pytest.raises(RedisTimeoutError):
            await pipeline.command("ECHO", "during")
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()


async def test_a_health_checked_connection_is_not_pinged_while_it_answers(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``health_check_interval``, redis-py PINGs a connection before a command only
    when nothing was read from it for that long: every reply a batch reads moves the
    check on, so batches closer together than the interval send no PING."""
    async with pipeline_on(redis_url, hold_connection=True,
                           client_options={"health_check_interval": 0.3}) as (
            client, pipeline):
        await pipeline.command("ECHO", "connect")
        sent = commands_sent(client, monkeypatch)
        for i in range(8):  # 0.8 s in all: more than twice the interval
            assert await pipeline.command("ECHO", str(i)) == str(i).encode()
            await asyncio.sleep(0.1)
        assert sent.count("PING") == 0


async def test_a_batch_after_a_broken_one_reads_only_its_own_replies(
        redis_url: str) -> None:
    """A batch cut short by a failing response callback leaves replies unread: its
    connection is dropped, and the next batch, on the connection made anew, reads only
    its own (the reader of the old connection, replies and all, is not reused)."""
    async with pipeline_on(redis_url, hold_connection=True) as (client, pipeline):
        echo = client.response_callbacks.get("ECHO")

        def failing_on_boom(reply: Any, **options: Any) -> Any:
            if reply == b"boom":
                raise ValueError("a callback that fails")
            return reply if echo is None else echo(reply, **options)

        client.response_callbacks["ECHO"] = failing_on_boom
        broken = await asyncio.gather(
            *(pipeline.command("ECHO", text) for text in ("x1", "boom", "x3")),
            return_exceptions=True)
        assert all(isinstance(outcome, ValueError) for outcome in broken)
        assert await asyncio.gather(pipeline.command("ECHO", "a"),
                                    pipeline.command("ECHO", "b")) == [b"a", b"b"]


async def test_a_push_message_inside_a_batch_is_not_taken_for_a_reply(redis_url: str) -> None:
    """RESP3: the server may push a message between a batch's replies (here the
    invalidation of a key this connection tracks, which the batch itself changes); every
    call still gets its own reply."""
    async with pipeline_on(f"{redis_url}?protocol=3", hold_connection=True) as (_, pipeline):
        await pipeline.command("CLIENT", "TRACKING", "ON")
        await pipeline.command("GET", "{t}:tracked")  # now tracked by this connection
        replies = await asyncio.gather(pipeline.command("SET", "{t}:tracked", "changed"),
                                       pipeline.command("ECHO", "after"),
                                       pipeline.command("GET", "{t}:tracked"))
        assert replies == [True, b"after", b"changed"]
