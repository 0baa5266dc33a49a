"""``anthropic``: Messages API streaming through the official ``anthropic`` SDK.

The SDK authenticates and sends the request (its ``anthropic-version`` and auth headers,
base URL, timeouts) and turns error statuses into its typed errors, in its raw-request form
(``cast_to=httpx2.Response``, as ``client.post`` sends it), over our HTTP transport
(``providers/aiohttp_transport.py``); each request's options are a copy of one template.
The body is built here (``build_anthropic_params``: the system prompt top level, turns
merged so that roles alternate) and sent as orjson bytes. The stream, read straight from
aiohttp, is decoded by our SSE decoder and orjson and mapped from its JSON
(``map_anthropic_data``), where the SDK's typed stream built a pydantic model per event
through httpx2's chunk iterators: ``bench/provider_cpu.py`` measured that path at 1.86
times the OpenAI provider's CPU per answer and this one at 1.10 (64 deltas an answer).
(The SDK's own tracing span for ``messages.create`` is not started on this path.)
``map_anthropic_errors()`` is the one place where SDK and transport exceptions
become ours; an in-stream ``error`` event maps by its type as the same failure's HTTP
status would. The SDK's own retries are off: the router decides.

Usage arrives in two halves: ``message_start`` carries the input tokens and
``message_delta`` the (cumulative) output tokens, each mapped to its own ``UsageReport``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import orjson
from anthropic._models import FinalRequestOptions  # what client.post builds from its arguments
from anthropic.types import MessageParam

from gateway.config import ProviderOptions
from providers.aiohttp_transport import sdk_http_client
from providers.base import (
    Finish,
    FinishReason,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    UsageReport,
    delta_text,
    token_count,
)
from providers.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    error_for_status,
    retry_after_from_headers,
)
from providers.reading import event_json
from providers.sse import SSEEvent
from providers.transport import (
    backstop_timeouts,
    map_transport_errors,
    stream_sse_answer,
    without_platform_headers,
)
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


def anthropic_body(params: AnthropicParams) -> bytes:
    """The Messages request's JSON body, streamed (no ``system`` when there is none)."""
    body: dict[str, Any] = {"model": params.model, "max_tokens": params.max_tokens,
                            "messages": params.messages, "stream": True}
    if params.system:
        body["system"] = params.system
    return orjson.dumps(body)


def _prompt_tokens(usage: dict[str, Any]) -> int:
    """All input tokens, cached or not: what the prompt costs against budgets."""
    return ((token_count(usage.get("input_tokens")) or 0)
            + (token_count(usage.get("cache_creation_input_tokens")) or 0)
            + (token_count(usage.get("cache_read_input_tokens")) or 0))


def map_anthropic_data(data: dict[str, Any], provider: str = "anthropic"
                       ) -> list[ProviderEvent]:
    """Events of one decoded stream event (by its ``type``), or raise its in-stream error;
    ``ping``, block starts and stops and ``message_stop`` carry nothing of ours."""
    kind = data.get("type")
    if kind == "content_block_delta":  # every streamed piece: tested first
        delta = data.get("delta") or {}
        text = delta_text(delta.get("text")) if delta.get("type") == "text_delta" else None
        return [TextDelta(text)] if text else []
    if kind == "message_start":
        usage = (data.get("message") or {}).get("usage") or {}
        if usage.get("input_tokens") is None:  # not reported: the gateway's own count stays
            return []
        return [UsageReport(prompt_tokens=_prompt_tokens(usage))]
    if kind == "message_delta":
        events: list[ProviderEvent] = []
        output = token_count((data.get("usage") or {}).get("output_tokens"))
        if output is not None:
            events.append(UsageReport(completion_tokens=output))
        reason = (data.get("delta") or {}).get("stop_reason")
        if reason is not None:
            events.append(Finish(_FINISH.get(reason, "stop")))
        return events
    if kind == "error":
        error = data.get("error")
        raise stream_error(error.get("type") if isinstance(error, dict) else None, provider)
    return []


def map_anthropic_event(message: SSEEvent, provider: str) -> list[ProviderEvent] | None:
    """One SSE event's events (None: ``message_stop``)."""
    data = event_json(message.data, provider)
    if data.get("type") == "message_stop":
        return None
    return map_anthropic_data(data, provider)


def stream_error(error_type: str | None, provider: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> ProviderError:
    """An HTTP status's error (``status``), or, for an ``error`` event inside a 200 stream
    (no status), the status its typed body stands for."""
    if status is None or status < 400:
        status = _ERROR_TYPE_STATUS.get(error_type or "", 502)
    return error_for_status(status, f"{provider} answered {status} ({error_type or 'error'})",
                            provider=provider, retry_after_s=retry_after_s)


def anthropic_status_error(exc: anthropic.APIStatusError, provider: str) -> ProviderError:
    """By HTTP status; for ``error`` events inside a 200 stream, by their typed body."""
    return stream_error(exc.type, provider, status=exc.status_code,
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
            default_headers=without_platform_headers(anthropic.omit),
            # httpx2's client over our aiohttp transport (providers/aiohttp_transport.py).
            http_client=sdk_http_client(timeout),
        )
        # The options of every request but its body and idempotency key, as client.post
        # constructs them, once; the endpoint joined to the base URL (and its path) here.
        base = str(self._client.base_url).rstrip("/")
        self._messages = FinalRequestOptions.construct(method="post",
                                                       url=f"{base}/v1/messages")

    @property
    def name(self) -> str:
        return "anthropic"

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        return stream_sse_answer(functools.partial(self._send, request),
                                 map_anthropic_event, self.name,
                                 map_anthropic_errors(self.name))

    async def _send(self, request: ProviderRequest) -> httpx2.Response:
        options = self._messages.model_copy(update={
            "content": anthropic_body(build_anthropic_params(request)),
            "idempotency_key": request.request_id or None})
        return await self._client.request(httpx2.Response, options, stream=True)

    async def aclose(self) -> None:
        await self._client.close()
