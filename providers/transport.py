"""What the SDK-based providers share below their SDKs: httpx2 transport errors, the
SDK timeout backstop (the router enforces the real first-token and chunk timeouts), the
SDKs' platform headers left out of every request, and the reading of a streamed SSE
answer (``stream_sse_answer``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import httpx2

from gateway.config import ProviderOptions
from providers.aiohttp_transport import body_answered, body_chunks, map_aiohttp_errors
from providers.base import Finish, ProviderEvent
from providers.errors import ProviderConnectionError, ProviderTimeout
from providers.sse import MapEvent, SSEDecoder, read_sse_events


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


async def stream_sse_answer(send: Callable[[], Awaitable[httpx2.Response]],
                            map_event: MapEvent, provider: str,
                            errors: AbstractContextManager[None]
                            ) -> AsyncGenerator[ProviderEvent, None]:
    """A streamed answer: ``send()`` (the SDK's request) under ``errors`` (where SDK and
    transport exceptions become ours), then the body straight from aiohttp, each read
    decoded by ``read_sse_events`` with the provider's ``map_event``. It ends at the
    protocol's last event (the body's end then read for the connection's reuse); a body
    that ends cleanly before any finish is a broken stream, not a complete answer; an
    error, ``aclose`` or a cancel closes the connection, not drained. Providers return it
    from ``stream`` (no generator between)."""
    decoder = SSEDecoder()
    with errors:
        response = await send()
        finished = False  # a finish came (an answer may end without the last event)
        try:
            async for raw in body_chunks(response):
                events, done, error = read_sse_events(decoder, raw, map_event, provider)
                for event in events:
                    yield event
                if error is not None:
                    raise error
                if done:
                    body_answered(response)
                    return
                finished = finished or any(type(e) is Finish for e in events)
            if not finished:
                raise ProviderConnectionError(f"{provider} stream ended early",
                                              provider=provider)
        finally:
            await response.aclose()
