from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.config import Config
from tests.e2e.wsclient import ChatSocket
from tests.gateway_harness import make_config, running_gateway, token

ConnectFn = Callable[..., Any]


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Config:
    return make_config(tmp_path, redis_url)


@pytest.fixture
async def gateway(config: Config) -> AsyncIterator[TestServer]:
    async with running_gateway(config) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def connect(gateway: TestServer, http: aiohttp.ClientSession) -> ConnectFn:
    @asynccontextmanager
    async def _connect(jwt: str | None = None, **claims: Any) -> AsyncIterator[ChatSocket]:
        jwt = jwt or token(**claims)
        url = gateway.make_url("/v1/ws")
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {jwt}"}) as ws:
            yield ChatSocket(ws)

    return _connect
