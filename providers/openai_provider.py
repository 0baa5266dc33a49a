"""``openai``: Chat Completions streaming through the official ``openai`` SDK.

Wire mapping is pure (``build_openai_params``, ``map_openai_chunk``); the I/O is the SDK
call inside ``map_openai_errors()``, the one place where SDK exceptions become ours.
The SDK's own retries are off: the router decides about retries and fallback.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk

from gateway.config import ProviderOptions
from providers.base import (
    Finish,
    FinishReason,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    UsageReport,
)
from providers.errors import (
    ProviderConnectionError,
    ProviderTimeout,
    error_for_status,
    retry_after_from_headers,
)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "content_filter": "stop", "tool_calls": "stop",
    "function_call": "stop",
}


def build_openai_params(request: ProviderRequest) -> dict[str, Any]:
    return {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def map_openai_chunk(chunk: ChatCompletionChunk) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    for choice in chunk.choices[:1]:
        if choice.delta and choice.delta.content:
            events.append(TextDelta(choice.delta.content))
        if choice.finish_reason:
            events.append(Finish(_FINISH.get(choice.finish_reason, "stop")))
    if chunk.usage is not None:
        events.append(UsageReport(prompt_tokens=chunk.usage.prompt_tokens,
                                  completion_tokens=chunk.usage.completion_tokens))
    return events


@contextmanager
def map_openai_errors(provider: str = "openai") -> Iterator[None]:
    try:
        yield
    except openai.APIStatusError as exc:
        raise error_for_status(exc.status_code, f"{provider} answered {exc.status_code}",
                               provider=provider,
                               retry_after_s=retry_after_from_headers(exc.response.headers)
                               ) from exc
    except openai.APITimeoutError as exc:
        raise ProviderTimeout(f"{provider} timed out", provider=provider) from exc
    except openai.APIConnectionError as exc:
        raise ProviderConnectionError(f"{provider} connection failed", provider=provider) from exc
    except openai.APIError as exc:  # errors in the stream body (SSE "error" events)
        raise ProviderConnectionError(f"{provider} stream error", provider=provider) from exc
    except httpx2.TimeoutException as exc:  # reading the stream body
        raise ProviderTimeout(f"{provider} timed out", provider=provider) from exc
    except httpx2.HTTPError as exc:
        raise ProviderConnectionError(f"{provider} transport error", provider=provider) from exc


def client_timeout(options: ProviderOptions) -> openai.Timeout:
    """The SDK's own timeouts are a backstop; the router enforces the real ones."""
    read = max(options.first_token_timeout_s, options.chunk_timeout_s)
    return openai.Timeout(read, connect=options.connect_timeout_s)


class OpenAIProvider:
    def __init__(self, options: ProviderOptions, *, api_key: str | None) -> None:
        self._client = openai.AsyncOpenAI(
            api_key=api_key or options.api_key or "unset",
            base_url=options.base_url,
            max_retries=0,
            timeout=client_timeout(options),
        )

    @property
    def name(self) -> str:
        return "openai"

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        with map_openai_errors(self.name):
            stream = await self._client.chat.completions.create(**build_openai_params(request))
        try:
            with map_openai_errors(self.name):
                async for chunk in stream:
                    for event in map_openai_chunk(chunk):
                        yield event
        finally:
            await stream.close()

    async def aclose(self) -> None:
        await self._client.close()
