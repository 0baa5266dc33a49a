"""Build test configs and run a real gateway (aiohttp on loopback) against a real Redis."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.config import Config, parse_config
from gateway.runtime import RUNTIME_KEY, Runtime

TEST_SECRET = "test-secret-of-a-decent-length-0123456789"


def sample_data() -> dict[str, Any]:
    text = resources.files("gateway").joinpath("sample_config.toml").read_text("utf-8")
    return tomllib.loads(text)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def make_config(tmp_path: Path, redis_url: str, **overrides: Any) -> Config:
    """The sample config on mock providers, with backends in ``tmp_path`` and overrides."""
    data = sample_data()
    for brand in data["brands"].values():
        brand["providers"] = ["mock:" + brand["providers"][0].split(":", 1)[1]]
    data["settings"] = {
        "redis_url": redis_url,
        "history_url": f"sqlite:///{tmp_path}/history.db",
        "archive_url": f"file://{tmp_path}/archive",
        "jwt_secret": TEST_SECRET,
    }
    _merge(data, overrides)
    return parse_config(data, env={}, source="test")


def token(user: str = "alice", brand: str = "growain", plan: str = "free", **kw: Any) -> str:
    return issue_token(TEST_SECRET, user=user, brand=brand, plan=plan, **kw)


@asynccontextmanager
async def running_gateway(config: Config, **app_options: Any) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(config, **app_options), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def runtime_of(server: TestServer) -> Runtime:
    return server.app[RUNTIME_KEY]


def openai_brands(fake_url: str, *brands: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """Overrides that route ``brands`` to an OpenAI-wire fake server at ``fake_url``."""
    return {
        "providers": {"openai": {"base_url": fake_url + "/v1", "api_key": "test-key"}},
        "brands": {b: {"providers": [f"openai:{model}"]} for b in brands},
    }
