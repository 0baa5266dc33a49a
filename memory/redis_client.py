"""Connect to Redis by URL: a real server, a Redis Cluster, or the embedded ``memory://``.

``memory://`` is fakeredis with Lua (lupa): the same commands and the same Lua scripts as a
real server, in-process, so ``chatgate serve`` needs no service. Each ``memory://NAME``
URL is its own isolated server; plain ``memory://`` is one per process.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

RedisClient = aioredis.Redis
MAX_CONNECTIONS = 64
POOL_TIMEOUT_S = 5.0


def is_embedded(url: str) -> bool:
    return url.startswith("memory://")


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
    for scheme, plain in (("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")):
        if url.startswith(scheme):  # rediss+cluster: TLS, as ElastiCache Serverless requires
            cluster = RedisCluster.from_url(plain + url.removeprefix(scheme), **options)
            return cluster  # type: ignore[return-value]
    # A blocking pool: under load, callers wait for a connection instead of failing.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=options.pop("max_connections", MAX_CONNECTIONS),
        timeout=options.pop("pool_timeout", POOL_TIMEOUT_S), **options)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool
