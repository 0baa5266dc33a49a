"""What the SDK-based providers share below their SDKs: httpx2 transport errors and the
SDK timeout backstop (the router enforces the real first-token and chunk timeouts)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import httpx2

from gateway.config import ProviderOptions
from providers.errors import ProviderConnectionError, ProviderTimeout


@contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """httpx2 errors raised while reading a streamed body (outside the SDKs' wrappers)."""
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise ProviderTimeout(f"{provider} timed out", provider=provider) from exc
    except httpx2.HTTPError as exc:
        raise ProviderConnectionError(f"{provider} transport error", provider=provider) from exc


def refused_connection(exc: BaseException) -> bool:
    """True when an SDK "timeout" was really a refused or failed connect: the SDKs' aiohttp
    backend reports aiohttp's connector errors as httpx2 connect timeouts."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(
                cause, aiohttp.ServerTimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def backstop_timeouts(options: ProviderOptions) -> tuple[float, float]:
    """(read, connect) seconds for an SDK client: a backstop behind the router's clocks."""
    return max(options.first_token_timeout_s, options.chunk_timeout_s), options.connect_timeout_s
