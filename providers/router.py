"""The router: walks a brand's provider chain until one answers.

Before the first event of an answer a retryable failure moves on to the next provider of
the chain; once an answer has started, a failure ends the turn (``StreamInterrupted``):
text that reached the client is never silently replaced by another provider's.
The router announces the provider that actually answers with a :class:`RouteChosen` event
before that provider's first event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Literal

from gateway.config import ProviderSpec
from providers.base import ProviderEvent, ProviderRequest
from providers.errors import ProviderError, StreamInterrupted
from providers.registry import ProviderRegistry


@dataclass(frozen=True, slots=True)
class RouteChosen:
    provider: str
    model: str
    type: Literal["route"] = "route"


RoutedEvent = RouteChosen | ProviderEvent


class Router:
    def __init__(self, registry: ProviderRegistry) -> None:
        self._registry = registry

    async def stream(self, brand: str, chain: Sequence[ProviderSpec],
                     request: ProviderRequest) -> AsyncIterator[RoutedEvent]:
        last_error: ProviderError | None = None
        for spec in chain:
            provider = self._registry.get(spec.kind, brand)
            attempt = replace(request, model=spec.model)
            started = False
            try:
                async with aclosing(provider.stream(attempt)) as events:
                    async for event in events:
                        if not started:
                            started = True
                            yield RouteChosen(provider=provider.name, model=spec.model)
                        yield event
                return
            except ProviderError as exc:
                if started:
                    raise StreamInterrupted(exc) from exc
                if not exc.retryable:
                    raise
                last_error = exc
        assert last_error is not None, "a brand's chain is never empty"
        raise last_error
