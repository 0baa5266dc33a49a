import asyncio
import socket

import pytest

from memory.redis_client import connect_redis


async def test_embedded_clients_with_the_same_url_share_one_server() -> None:
    a, b = connect_redis("memory://shared-test"), connect_redis("memory://shared-test")
    other = connect_redis("memory://other-test")
    await a.set("k", "v")
    assert await b.get("k") == b"v"
    assert await other.get("k") is None
    for client in (a, b, other):
        await client.aclose()


async def test_real_server_client_uses_a_blocking_pool(redis_url: str) -> None:
    from redis.asyncio import BlockingConnectionPool

    client = connect_redis(redis_url)
    assert isinstance(client.connection_pool, BlockingConnectionPool)
    assert await client.ping()
    await client.aclose()


async def test_callers_beyond_the_pool_wait_their_turn(redis_url: str) -> None:
    """Ten times as many callers as connections, each asking again as soon as it is served,
    on a real server: every call is served within the pool's timeout. (redis-py's own
    blocking pool lets a caller that finds a free connection take it ahead of those
    waiting: with these figures, dozens of calls of 5,000 failed with "No connection
    available" after waiting the whole 0.5 s, while the server answered 4,000 a second.)"""
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = connect_redis(redis_url, max_connections=2, pool_timeout=0.5)
    calls, failed = iter(range(5_000)), 0

    async def caller() -> None:
        nonlocal failed
        for _ in calls:
            try:
                await client.ping()
            except RedisConnectionError:
                failed += 1

    try:
        await asyncio.gather(*(caller() for _ in range(20)))
        assert failed == 0
        pool = client.connection_pool
        assert len(pool._in_use_connections) == 0  # every turn given back
        assert pool._turns._value == 2  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_a_failed_connect_gives_its_turn_back() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = connect_redis(f"redis://127.0.0.1:{port}", max_connections=1, pool_timeout=0.5)
    try:
        for _ in range(3):  # with its one turn kept by a failure, the second would time out
            with pytest.raises(RedisConnectionError, match=r"connecting to"):
                await client.ping()
    finally:
        await client.aclose()


async def test_commands_reach_a_real_server_packed_by_hiredis(redis_url: str) -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from memory.redis_client import HiredisPacking, _with_hiredis_packing

    client = connect_redis(redis_url)
    try:
        assert issubclass(client.connection_pool.connection_class, HiredisPacking)
        values: list[object] = ["é 😀", b"\x00\xff\r\n", 42, -7, 0.1, 1.5e-7, "x" * 1_000_000]
        for index, value in enumerate(values):  # every value round trips unchanged
            await client.set(f"packing:{index}", value)
            expected = value if isinstance(value, bytes) else str(value).encode()
            if isinstance(value, float):
                expected = repr(value).encode()
            assert await client.get(f"packing:{index}") == expected
        reply = await client.execute_command("CONFIG GET", "maxclients")  # a two-word name
        assert [k.decode() if isinstance(k, bytes) else k for k in reply] == ["maxclients"]
        await client.set("packing:view", memoryview(b"viewed"))  # hiredis refuses: redis-py's
        assert await client.get("packing:view") == b"viewed"
        with pytest.raises(DataError):  # refused, as redis-py refuses it
            await client.set("packing:bool", True)
    finally:
        await client.aclose()
    plain = Connection()  # the same wire bytes as redis-py's own packer
    ours = _with_hiredis_packing(Connection)()
    command = ("EVALSHA", "a" * 40, 2, "{b}:k1", "{b}:k2", 10, -2.5, "é")
    assert b"".join(ours.pack_command(*command)) == b"".join(plain.pack_command(*command))


async def test_a_pooled_connection_closed_by_the_server_while_idle_is_reopened(
        redis_url: str) -> None:
    """A restart, a failover or an idle timeout closes pooled connections; the next
    command on one must not fail (redis-py 8 skips its check while maintenance
    notifications are on, its default)."""
    client, other = connect_redis(redis_url), connect_redis(redis_url)
    try:
        first = await client.client_id()
        [idle] = client.connection_pool._available_connections  # type: ignore[attr-defined]
        assert await other.client_kill_filter(_id=first) == 1
        async with asyncio.timeout(5):  # nothing was sent on it: it reads the EOF only
            assert await idle._reader.read(1) == b""
        assert await client.echo("after") == b"after"
        async with client.pipeline(transaction=False) as pipe:
            pipe.client_id()
            assert (await pipe.execute())[0] != first
    finally:
        await client.aclose()
        await other.aclose()
