"""The registry builds real providers from config, reading credentials only at build time."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gateway.config import Brand, Config, Plan, ProviderOptions, ProviderSpec
from memory.tokens import TokenCounter
from providers.base import TextDelta
from providers.registry import ProviderRegistry, UnknownProviderError, build_registry
from tests.fakes.providers import chat_request
from tests.fakes.upstream import FakeUpstream, ok


def config_with(chain: tuple[ProviderSpec, ...],
                providers: Mapping[str, ProviderOptions]) -> Config:
    brand = Brand("acme", chain, tokens_per_conversation=1000, monthly_budget=1000,
                  alert_threshold=0.8)
    return Config(plans={"free": Plan("free", 1, 1, 100, 1, False)}, brands={"acme": brand},
                  pricing={}, providers=providers)


async def answer_of(registry: ProviderRegistry, kind: str) -> str:
    try:
        stream = registry.get(kind).stream(chat_request(("user", "Hi")))
        return "".join([e.text async for e in stream if isinstance(e, TextDelta)])
    finally:
        await registry.aclose()


async def test_bedrock_from_config_and_aws_env(bedrock_fake: FakeUpstream,
                                               aws_test_env: dict[str, str]) -> None:
    config = config_with((ProviderSpec("bedrock", "amazon.nova-test"),),
                         {"bedrock": ProviderOptions(base_url=bedrock_fake.url)})
    bedrock_fake.script(ok("from", " config"))
    registry = build_registry(config, TokenCounter(), env=aws_test_env)
    assert await answer_of(registry, "bedrock") == "from config"
    assert "/us-east-1/" in bedrock_fake.requests[0].headers["authorization"]


async def test_anthropic_key_and_base_url_from_env_at_build_time(
        anthropic_fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_with((ProviderSpec("anthropic", "claude-test"),), {})
    env = {"ANTHROPIC_API_KEY": "env-key", "ANTHROPIC_BASE_URL": anthropic_fake.url}
    registry = build_registry(config, TokenCounter(), env=env)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "changed-later")  # not read per request
    assert await answer_of(registry, "anthropic") == "Hello, world!"
    headers = anthropic_fake.requests[0].headers
    assert "env-key" in (headers.get("x-api-key"), headers.get("authorization"),
                         headers.get("authorization", "").removeprefix("Bearer "))


async def test_configured_api_key_wins_over_env(openai_fake: FakeUpstream) -> None:
    options = ProviderOptions(base_url=f"{openai_fake.url}/v1", api_key="config-key")
    config = config_with((ProviderSpec("openai", "gpt-test"),), {"openai": options})
    registry = build_registry(config, TokenCounter(), env={"OPENAI_API_KEY": "env-key"})
    await answer_of(registry, "openai")
    assert openai_fake.requests[0].headers["authorization"] == "Bearer config-key"


def test_options_for_every_kind() -> None:
    options = ProviderOptions(max_retries=7)
    config = config_with((ProviderSpec("mock", "m"),), {"openai": options})
    registry = build_registry(config, TokenCounter(), env={})
    assert registry.options_for("openai") == options
    assert registry.options_for("anthropic") == ProviderOptions()
    with pytest.raises(UnknownProviderError):
        registry.get("anthropic")
