"""Connect to Redis by URL: a real server, a Redis Cluster, or the embedded ``memory://``.

``memory://`` is fakeredis with Lua (lupa): the same commands and the same Lua scripts as a
real server, in-process, so ``chatgate serve`` needs no service. Each ``memory://NAME``
URL is its own isolated server; plain ``memory://`` is one per process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.maint_notifications import MaintNotificationsConfig

RedisClient = aioredis.Redis
MAX_CONNECTIONS = 64
POOL_TIMEOUT_S = 5.0


def is_embedded(url: str) -> bool:
    return url.startswith("memory://")


_CLUSTER_SCHEMES = (("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://"))


def is_cluster(url: str) -> bool:
    return url.startswith(tuple(scheme for scheme, _ in _CLUSTER_SCHEMES))


def connect_redis(url: str, **options: Any) -> RedisClient:
    """A client for ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``rediss+cluster://`` or ``memory://``.

    Cluster clients expose the same command API; they are returned under the same type
    because every script we run keeps its keys in one hash slot.
    """
    if is_embedded(url):
        import fakeredis

        # fakeredis shares one in-process server between clients with the same ``host``.
        name = url.removeprefix("memory://") or "chatgate"
        client: RedisClient = fakeredis.FakeAsyncRedis(host=f"embedded-{name}", **options)
        return client
    for scheme, plain in _CLUSTER_SCHEMES:
        if url.startswith(scheme):  # rediss+cluster: TLS, as ElastiCache Serverless requires
            cluster = RedisCluster.from_url(plain + url.removeprefix(scheme), **options)
            return cluster  # type: ignore[return-value]
    # A blocking pool: under load, callers wait for a connection instead of failing, in
    # turn (FairConnectionPool). Without maintenance notifications (a Redis Enterprise
    # feature, "auto" by default in redis-py 8): while they are on, the pool hands out a
    # connection the server closed while it sat idle (a restart, a failover, an idle
    # timeout) without reopening it, and the first command on it fails.
    options.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    pool = FairConnectionPool.from_url(
        url, max_connections=options.pop("max_connections", MAX_CONNECTIONS),
        timeout=options.pop("pool_timeout", POOL_TIMEOUT_S), **options)
    pool.connection_class = _with_hiredis_packing(pool.connection_class)  # before any connect
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


class FairConnectionPool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, its waiters served in the order they came.

    redis-py's own lets a caller that finds a free connection take it at once, ahead of
    those already waiting for one (a task that releases a connection and asks again takes
    it back before the waiter it woke can run): with one caller more than connections, one
    waited 6.8 s for a PING on a real server answering 5,900 a second, and callers past the
    pool's ``timeout`` fail with "No connection available". Here a caller first takes a
    turn from a FIFO semaphore of ``max_connections`` turns, given back when its connection
    is released, so redis-py's pool has a connection for it (almost always at once: a
    release that was cancelled is finished in the background, and its connection comes
    back a moment after its turn). The ``timeout`` bounds the wait for a turn, with
    redis-py's error, and redis-py's own wait after it (so, rarely, a caller waits up to
    twice the ``timeout``). Redis Cluster clients keep redis-py's own pools per node."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(self.max_connections)
        self._holders: set[AbstractConnection] = set()  # connections that hold a turn

    async def get_connection(self, command_name: Any = None, *keys: Any,
                             **options: Any) -> AbstractConnection:
        try:
            async with asyncio.timeout(self.timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            connection: AbstractConnection = (
                await super().get_connection())  # type: ignore[no-untyped-call]
        except BaseException:
            self._turns.release()
            raise
        self._holders.add(connection)
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._holders:
                self._holders.discard(connection)
                self._turns.release()


def connect_pipeline_client(url: str, **options: Any) -> RedisClient | None:
    """The client for an :class:`~memory.pipelining.AutoPipeline` on a real server, which
    bounds each batch as a whole (its ``timeout_s``): replies are read with no per-reply
    timeout (``socket_timeout=None``; connecting keeps its own). None for the URLs whose
    main client serves the auto-pipeline as well: an embedded server has no sockets to time
    out, and a cluster client is not pipelined (every call goes straight to it, keeping its
    timeouts), so a second client would only open connections twice."""
    if is_embedded(url) or is_cluster(url):
        return None
    client = connect_redis(url, **options)
    # After parsing: redis-py lets a URL's own ``?socket_timeout=`` override keywords.
    client.connection_pool.connection_kwargs["socket_timeout"] = None
    return client


class HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's sync client packs them; its asyncio
    connections pack in Python, about 5 µs more per command. The same wire bytes; an
    argument hiredis does not take (a memoryview, a bool) goes to redis-py's own packer,
    which accepts or refuses it as before."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name, words = args[0], args
        if isinstance(name, str):  # a multi-word command name ("CONFIG GET") is split
            words = (*name.encode().split(), *args[1:])
        elif b" " in name:
            words = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(words)]
        except TypeError:
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


def _with_hiredis_packing(base: type[Any]) -> type[Any]:
    return type(f"Hiredis{base.__name__}", (HiredisPacking, base), {})
