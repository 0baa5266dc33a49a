"""What the SDK-based providers share below their SDKs: httpx2 transport errors, the
SDK timeout backstop (the router enforces the real first-token and chunk timeouts) and
the SDKs' platform headers left out of every request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

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


# The SDKs' platform headers (X-Stainless-*: the host's OS, architecture and runtime):
# they describe the gateway's host to the upstream and cost a header each.
PLATFORM_HEADERS = ("X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS",
                    "X-Stainless-Arch", "X-Stainless-Runtime", "X-Stainless-Runtime-Version",
                    "X-Stainless-Async")


def without_platform_headers(omit: Any) -> Mapping[str, str]:
    """``default_headers`` for an SDK client that drops the platform headers (``omit``:
    that SDK's ``Omit`` value, which removes a header)."""
    return cast(Mapping[str, str], dict.fromkeys(PLATFORM_HEADERS, omit))
