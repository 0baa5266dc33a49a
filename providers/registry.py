"""Provider instances by kind, built once per app from the config (pooled clients).

Credentials and endpoints are read here, at build time, from the config or the
environment (``options.api_key`` wins over ``*_API_KEY``); providers never read the
environment in the request path. The registry also hands each kind's
:class:`ProviderOptions` to the router (timeouts, retries, circuit breaking).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from gateway.config import PROVIDER_KEY_ENV, Config, MockSettings, ProviderOptions
from memory.tokens import TokenCounter
from providers.base import Provider
from providers.mock import MockProvider

DEFAULT_OPTIONS = ProviderOptions()  # frozen: one shared instance


class UnknownProviderError(KeyError):
    pass


class ProviderRegistry:
    """Holds one provider per kind; ``get(kind, brand)`` returns it."""

    def __init__(self, providers: Mapping[str, Provider], *, mock_for_brand: Mapping[str, Provider]
                 | None = None, options: Mapping[str, ProviderOptions] | None = None) -> None:
        self._providers = dict(providers)
        self._mock_for_brand = dict(mock_for_brand or {})
        self._options = dict(options or {})

    def get(self, kind: str, brand: str = "") -> Provider:
        if kind == "mock" and brand in self._mock_for_brand:
            return self._mock_for_brand[brand]
        try:
            return self._providers[kind]
        except KeyError:
            raise UnknownProviderError(kind) from None

    def options_for(self, kind: str) -> ProviderOptions:
        return self._options.get(kind) or DEFAULT_OPTIONS

    async def start(self) -> None:
        """Optional warm-up: open the clients of providers that open lazily (Bedrock)."""
        for provider in self._providers.values():
            start = getattr(provider, "start", None)
            if start is not None:
                await start()

    async def aclose(self) -> None:
        for provider in {id(p): p for p in [*self._providers.values(),
                                              *self._mock_for_brand.values()]}.values():
            await provider.aclose()


def _fixed(settings: MockSettings) -> Callable[[str], MockSettings]:
    return lambda _model: settings


def build_registry(config: Config, counter: TokenCounter,
                   env: Mapping[str, str] | None = None) -> ProviderRegistry:
    """Create the providers the config's chains name, with credentials from config or env."""
    env = os.environ if env is None else env
    kinds = {spec.kind for brand in config.brands.values() for spec in brand.providers}
    providers: dict[str, Provider] = {
        "mock": MockProvider(lambda model: config.mock_models.get(model, config.mock), counter)
    }
    mock_for_brand: dict[str, Provider] = {
        brand.name: MockProvider(_fixed(brand.mock), counter)
        for brand in config.brands.values() if brand.mock is not None
    }
    for kind in sorted(kinds - {"mock"}):
        providers[kind] = _build(kind, config.provider_options(kind), env)
    return ProviderRegistry(providers, mock_for_brand=mock_for_brand,
                            options=dict(config.providers))


def _api_key(kind: str, options: ProviderOptions, env: Mapping[str, str]) -> str | None:
    return options.api_key or env.get(PROVIDER_KEY_ENV.get(kind, "")) or None


def _openai(options: ProviderOptions, env: Mapping[str, str]) -> Provider:
    from providers.openai_provider import OpenAIProvider

    base_url = options.base_url or env.get("OPENAI_BASE_URL")
    return OpenAIProvider(replace(options, base_url=base_url),
                          api_key=_api_key("openai", options, env))


def _anthropic(options: ProviderOptions, env: Mapping[str, str]) -> Provider:
    from providers.anthropic_provider import AnthropicProvider

    base_url = options.base_url or env.get("ANTHROPIC_BASE_URL")
    return AnthropicProvider(replace(options, base_url=base_url),
                             api_key=_api_key("anthropic", options, env))


def _bedrock(options: ProviderOptions, env: Mapping[str, str]) -> Provider:
    from providers.bedrock_provider import BedrockProvider

    region = options.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    return BedrockProvider(options, region=region)


_BUILDERS: dict[str, Callable[[ProviderOptions, Mapping[str, str]], Provider]] = {
    "openai": _openai, "anthropic": _anthropic, "bedrock": _bedrock,
}


def _build(kind: str, options: ProviderOptions, env: Mapping[str, str]) -> Provider:
    try:
        builder = _BUILDERS[kind]
    except KeyError:
        raise UnknownProviderError(kind) from None
    return builder(options, env)
