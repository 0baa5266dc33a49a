from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from memory.redis_client import RedisClient, connect_redis
from tests.redis_server import redis_server

_embedded_names = itertools.count()


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=["redis", "memory"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """Both backends: the real server (flushed) and a fresh embedded ``memory://`` one."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return f"memory://test-{next(_embedded_names)}"


@pytest.fixture
async def redis_url(redis_server_url: str) -> AsyncIterator[str]:
    """A real Redis server, emptied before each test."""
    client = connect_redis(redis_server_url)
    await client.flushdb()
    await client.script_flush()
    await client.aclose()
    yield redis_server_url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def any_redis(any_redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect_redis(any_redis_url)
    yield client
    await client.aclose()
