"""``anthropic``: Messages API streaming through the official ``anthropic`` SDK.

Wire mapping is pure (``build_anthropic_params``, ``map_anthropic_event``); the I/O is
the SDK call inside ``map_anthropic_errors()``, the one place where SDK and transport
exceptions become ours. The SDK's own retries are off: the router decides.

Usage arrives in two halves: ``message_start`` carries the input tokens and
``message_delta`` the (cumulative) output tokens, each mapped to its own ``UsageReport``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anthropic
from anthropic.types import (
    MessageParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStreamEvent,
)
from anthropic.types import (
    TextDelta as AnthropicTextDelta,
)
from anthropic.types import (
    Usage as AnthropicUsage,
)

from gateway.config import ProviderOptions
from providers.aiohttp_transport import sdk_http_client
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
    ProviderError,
    ProviderTimeout,
    error_for_status,
    retry_after_from_headers,
)
from providers.transport import backstop_timeouts, map_transport_errors
from providers.turns import split_turns

DEFAULT_BASE_URL = "https://api.anthropic.com"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "stop", "pause_turn": "stop",
    "refusal": "stop",
}

# ``error`` events arrive inside a 200 stream: their typed ``error.type`` stands for the
# status the same failure has when it comes as an HTTP response.
_ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
    "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}


@dataclass(frozen=True, slots=True)
class AnthropicParams:
    model: str
    max_tokens: int
    system: str
    messages: list[MessageParam]


def build_anthropic_params(request: ProviderRequest) -> AnthropicParams:
    """System prompt to the top-level ``system``; turns merged so roles alternate."""
    split = split_turns(request.messages)
    messages: list[MessageParam] = []
    for turn in split.turns:
        if turn.role == "user":
            messages.append({"role": "user", "content": turn.content})
        else:
            messages.append({"role": "assistant", "content": turn.content})
    return AnthropicParams(model=request.model, max_tokens=request.max_tokens,
                           system=split.system, messages=messages)


def _prompt_tokens(usage: AnthropicUsage) -> int:
    """All input tokens, cached or not: what the prompt costs against budgets."""
    return (usage.input_tokens + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0))


def map_anthropic_event(event: RawMessageStreamEvent) -> list[ProviderEvent]:
    match event:
        case RawMessageStartEvent(message=message):
            return [UsageReport(prompt_tokens=_prompt_tokens(message.usage))]
        case RawContentBlockDeltaEvent(delta=AnthropicTextDelta(text=text)) if text:
            return [TextDelta(text)]
        case RawMessageDeltaEvent(delta=delta, usage=usage):
            events: list[ProviderEvent] = [UsageReport(completion_tokens=usage.output_tokens)]
            if delta.stop_reason is not None:
                events.append(Finish(_FINISH.get(delta.stop_reason, "stop")))
            return events
        case _:
            return []


def anthropic_status_error(exc: anthropic.APIStatusError, provider: str) -> ProviderError:
    """By HTTP status; for ``error`` events inside a 200 stream, by their typed body."""
    status = exc.status_code
    if status < 400:
        status = _ERROR_TYPE_STATUS.get(exc.type or "", 502)
    return error_for_status(status, f"{provider} answered {status} ({exc.type or 'error'})",
                            provider=provider,
                            retry_after_s=retry_after_from_headers(exc.response.headers))


@contextmanager
def map_anthropic_errors(provider: str = "anthropic") -> Iterator[None]:
    try:
        with map_transport_errors(provider):
            yield
    except anthropic.APIStatusError as exc:
        raise anthropic_status_error(exc, provider) from exc
    except anthropic.APITimeoutError as exc:
        raise ProviderTimeout(f"{provider} timed out", provider=provider) from exc
    except anthropic.APIConnectionError as exc:
        raise ProviderConnectionError(f"{provider} connection failed", provider=provider) from exc
    except anthropic.APIError as exc:  # e.g. a body that does not match the schema
        raise ProviderConnectionError(f"{provider} sent an invalid response",
                                      provider=provider) from exc


def client_timeout(options: ProviderOptions) -> anthropic.Timeout:
    read, connect = backstop_timeouts(options)
    return anthropic.Timeout(read, connect=connect)


class AnthropicProvider:
    def __init__(self, options: ProviderOptions, *, api_key: str | None) -> None:
        timeout = client_timeout(options)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or options.api_key or "unset",
            base_url=options.base_url or DEFAULT_BASE_URL,
            max_retries=0,
            timeout=timeout,
            # httpx2's client over our aiohttp transport (providers/aiohttp_transport.py).
            http_client=sdk_http_client(timeout),
        )

    @property
    def name(self) -> str:
        return "anthropic"

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        params = build_anthropic_params(request)
        with map_anthropic_errors(self.name):
            stream = await self._client.messages.create(
                model=params.model, max_tokens=params.max_tokens, messages=params.messages,
                system=params.system or anthropic.omit, stream=True,
            )
        try:
            with map_anthropic_errors(self.name):
                async for event in stream:
                    for mapped in map_anthropic_event(event):
                        yield mapped
        finally:
            await stream.close()

    async def aclose(self) -> None:
        await self._client.close()
