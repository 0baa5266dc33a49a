"""Fixtures for the Lambda transport: the emulator (and the aiohttp app) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deploy.lambda_gateway import LambdaGateway
from deploy.local import GATEWAYS_KEY, create_lambda_app
from deploy.settings import LambdaSettings
from gateway.app import create_app
from gateway.config import Config
from gateway.runtime import Runtime
from tests.e2e.wsclient import ChatSocket
from tests.gateway_harness import make_config, token

# Fast cancel polling for tests; the coalescing bounds are the defaults.
TEST_SETTINGS = LambdaSettings(cancel_poll_ms=20)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[TestServer]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def gateways(server: TestServer) -> list[LambdaGateway]:
    return server.app[GATEWAYS_KEY].gateways


@dataclass
class Gateway:
    """A running gateway of either transport, and a way to open sockets on it."""

    mode: str
    server: TestServer
    runtime: Runtime
    http: aiohttp.ClientSession

    def url(self, path: str = "/v1/ws") -> str:
        return str(self.server.make_url(path))

    @asynccontextmanager
    async def connect(self, jwt: str | None = None, *, header: bool = True,
                      **claims: Any) -> AsyncIterator[ChatSocket]:
        jwt = jwt or token(**claims)
        options: dict[str, Any] = (
            {"headers": {"Authorization": f"Bearer {jwt}"}} if header else
            {"params": {"token": jwt}})
        async with self.http.ws_connect(self.url(), **options) as ws:
            yield ChatSocket(ws)


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def lambda_gateway(tmp_path: Path, redis_url: str,
                   http: aiohttp.ClientSession) -> GatewayFactory:
    """Opens the emulator with the Lambda handlers: ``async with lambda_gateway(...) as g``."""

    @asynccontextmanager
    async def _open(*, instances: int = 1, settings: LambdaSettings = TEST_SETTINGS,
                    async_turns: bool = False, **overrides: Any) -> AsyncIterator[Gateway]:
        config = make_config(tmp_path, redis_url, **overrides)
        # The persister's blocking read would add a second to every teardown; the turns'
        # context comes from hot memory, so these tests do not need it.
        app = create_lambda_app(config, settings=settings, instances=instances,
                                run_persister=False, async_turns=async_turns)
        async with serving(app) as server:
            yield Gateway("lambda", server, gateways(server)[0].runtime, http)

    return _open


def open_transport(mode: str, config: Config) -> web.Application:
    """``chatgate serve`` or ``chatgate serve --lambda`` (minus the background persister)."""
    if mode == "lambda":
        return create_lambda_app(config, settings=TEST_SETTINGS, run_persister=False)
    return create_app(config)
