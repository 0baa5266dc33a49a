"""Provider instances by kind, built once per app from the config (pooled clients)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from gateway.config import PROVIDER_KEY_ENV, Config, MockSettings
from memory.tokens import TokenCounter
from providers.base import Provider
from providers.mock import MockProvider


class UnknownProviderError(KeyError):
    pass


class ProviderRegistry:
    """Holds one provider per kind; ``get(kind, brand)`` returns it."""

    def __init__(self, providers: Mapping[str, Provider], *, mock_for_brand: Mapping[str, Provider]
                 | None = None) -> None:
        self._providers = dict(providers)
        self._mock_for_brand = dict(mock_for_brand or {})

    def get(self, kind: str, brand: str = "") -> Provider:
        if kind == "mock" and brand in self._mock_for_brand:
            return self._mock_for_brand[brand]
        try:
            return self._providers[kind]
        except KeyError:
            raise UnknownProviderError(kind) from None

    async def aclose(self) -> None:
        for provider in {id(p): p for p in [*self._providers.values(),
                                              *self._mock_for_brand.values()]}.values():
            await provider.aclose()


def build_registry(config: Config, counter: TokenCounter,
                   env: Mapping[str, str] | None = None) -> ProviderRegistry:
    """Create the providers the config's chains name, with credentials from config or env."""
    env = os.environ if env is None else env
    kinds = {spec.kind for brand in config.brands.values() for spec in brand.providers}
    providers: dict[str, Provider] = {
        "mock": MockProvider(lambda model: config.mock_models.get(model, config.mock), counter)
    }
    mock_for_brand: dict[str, Provider] = {}
    for brand in config.brands.values():
        if brand.mock is not None:
            mock_for_brand[brand.name] = MockProvider(_fixed(brand.mock), counter)
    for kind in sorted(kinds - {"mock"}):
        providers[kind] = _build(kind, config, env)
    return ProviderRegistry(providers, mock_for_brand=mock_for_brand)


def _fixed(settings: MockSettings) -> Callable[[str], MockSettings]:
    def settings_for(_model: str) -> MockSettings:
        return settings

    return settings_for


def _build(kind: str, config: Config, env: Mapping[str, str]) -> Provider:
    options = config.provider_options(kind)
    key = env.get(PROVIDER_KEY_ENV.get(kind, ""), None)
    if kind == "openai":
        from providers.openai_provider import OpenAIProvider

        base_url = options.base_url or env.get("OPENAI_BASE_URL")
        return OpenAIProvider(replace(options, base_url=base_url), api_key=key)
    raise UnknownProviderError(kind)
