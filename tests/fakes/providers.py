"""Real providers (official SDKs) pointed at the fake servers, for tests at any level.

``provider_for(kind, fake)`` builds the provider directly; ``options_for(kind, fake)`` is the
``ProviderOptions`` (base URL, dummy key) to put in a ``Config`` so that
``build_registry`` builds the same thing (Bedrock then also needs ``aws_test_env``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import cache

import aioboto3
import pytest

from gateway.config import ProviderOptions
from providers.anthropic_provider import AnthropicProvider
from providers.base import ChatMessage, Provider, ProviderEvent, ProviderRequest, Role
from providers.bedrock_provider import BedrockProvider
from providers.openai_provider import OpenAIProvider
from tests.fakes.anthropic_server import anthropic_fake
from tests.fakes.bedrock_server import bedrock_fake
from tests.fakes.openai_server import openai_fake
from tests.fakes.upstream import FakeUpstream

TEST_API_KEY = "test-key"
TEST_REGION = "us-east-1"
FAKES: dict[str, Callable[[], FakeUpstream]] = {
    "openai": openai_fake, "anthropic": anthropic_fake, "bedrock": bedrock_fake,
}


def base_url_for(kind: str, fake: FakeUpstream) -> str:
    return f"{fake.url}/v1" if kind == "openai" else fake.url


def options_for(kind: str, fake: FakeUpstream, options: ProviderOptions | None = None
                ) -> ProviderOptions:
    options = options or ProviderOptions()
    region = TEST_REGION if kind == "bedrock" else options.region
    api_key = None if kind == "bedrock" else TEST_API_KEY
    return replace(options, base_url=base_url_for(kind, fake), api_key=api_key, region=region)


@cache
def dummy_session() -> aioboto3.Session:
    """An aioboto3 session with dummy credentials: no environment, no metadata service.

    One per process: the session caches the loaded service model, so clients open fast.
    """
    return aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name=TEST_REGION)


def _openai(options: ProviderOptions) -> Provider:
    return OpenAIProvider(options, api_key=options.api_key)


def _anthropic(options: ProviderOptions) -> Provider:
    return AnthropicProvider(options, api_key=options.api_key)


def _bedrock(options: ProviderOptions) -> Provider:
    return BedrockProvider(options, region=options.region, session=dummy_session())


_BUILDERS: dict[str, Callable[[ProviderOptions], Provider]] = {
    "openai": _openai, "anthropic": _anthropic, "bedrock": _bedrock,
}


def provider_for(kind: str, fake: FakeUpstream, options: ProviderOptions | None = None
                 ) -> Provider:
    return _BUILDERS[kind](options_for(kind, fake, options))


def chat_request(*messages: tuple[Role, str], model: str = "model-1", max_tokens: int = 64
                 ) -> ProviderRequest:
    return ProviderRequest(model=model, max_tokens=max_tokens,
                           messages=tuple(ChatMessage(role, text) for role, text in messages))


async def events_until(provider: Provider, request: ProviderRequest,
                       error: type[BaseException]) -> list[ProviderEvent]:
    """What ``provider`` streams for ``request`` before it raises ``error`` (it must); the
    provider is closed after."""
    seen: list[ProviderEvent] = []
    try:
        with pytest.raises(error):
            async for event in provider.stream(request):
                seen.append(event)
    finally:
        await provider.aclose()
    return seen
