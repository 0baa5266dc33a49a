"""What the SDK-based providers share below their SDKs: httpx2 transport errors and the
SDK timeout backstop (the router enforces the real first-token and chunk timeouts)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from gateway.config import ProviderOptions
from providers.aiohttp_transport import map_aiohttp_errors
from providers.errors import ProviderConnectionError, ProviderTimeout


@contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """httpx2 and aiohttp errors raised while reading a streamed body (outside the SDKs'
    wrappers)."""
    try:
        with map_aiohttp_errors():  # a body read straight from aiohttp (body_chunks)
            yield
    except httpx2.TimeoutException as exc:
        raise ProviderTimeout(f"{provider} timed out", provider=provider) from exc
    except httpx2.HTTPError as exc:
        raise ProviderConnectionError(f"{provider} transport error", provider=provider) from exc


def backstop_timeouts(options: ProviderOptions) -> tuple[float, float]:
    """(read, connect) seconds for an SDK client: a backstop behind the router's clocks."""
    return max(options.first_token_timeout_s, options.chunk_timeout_s), options.connect_timeout_s
