"""``openai``: Chat Completions streaming through the official ``openai`` SDK.

The SDK authenticates and sends the request and turns error statuses into its typed
errors, in its raw-request form (``cast_to=httpx.Response``, as ``client.post`` sends it,
which skips re-validating our already-typed params: ~0.7 ms a call), over our HTTP
transport (``providers/aiohttp_transport.py``); for a provider's client (a plain key, no
retries) without ``request``'s loop around the SDK's build and send, which does nothing
for such a client (``_SDKClient.stream_response``: 0.975x the CPU per turn). Each
request's options are a copy of one template made per provider (``client.post`` would
construct them anew, resolving every default field of the pydantic model), and the SDK's
platform telemetry headers are omitted (they describe the gateway's host to the upstream
and cost a header each): measured in isolation, the SDK's part of a request at 0.70x. The
body, read straight from aiohttp, is decoded by our own pure SSE decoder and orjson
(``map_openai_data``), a fraction of the cost of a pydantic model per chunk.
``map_openai_errors()`` is the one place where SDK exceptions become ours. The SDK's own
retries are off: the router decides about retries and fallback.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
import orjson
from openai._models import FinalRequestOptions  # what client.post builds from its arguments

from gateway.config import ProviderOptions
from providers.aiohttp_transport import (
    MAX_REMEMBERED_URLS,
    sdk_http_client,
)
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
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
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

MAX_HEADER_TEMPLATES = 16  # header sets an SDK client keeps (one per retry count, in use)

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


def map_openai_data(data: dict[str, Any], provider: str = "openai") -> list[ProviderEvent]:
    """Events of one decoded ``chat.completion.chunk`` (or raise its in-stream error)."""
    if "error" in data:
        raise _stream_error(data["error"], provider)
    events: list[ProviderEvent] = []
    choices = data.get("choices") or ()
    if choices:
        choice = choices[0]
        content = delta_text((choice.get("delta") or {}).get("content"))
        if content:
            events.append(TextDelta(content))
        reason = choice.get("finish_reason")
        if reason:
            events.append(Finish(_FINISH.get(reason, "stop")))
    usage = data.get("usage")
    if usage:
        events.append(UsageReport(prompt_tokens=token_count(usage.get("prompt_tokens")),
                                  completion_tokens=token_count(usage.get("completion_tokens"))))
    return events


def map_openai_event(message: SSEEvent, provider: str) -> list[ProviderEvent] | None:
    """One SSE event's events (None: ``[DONE]``)."""
    if message.data == "[DONE]":
        return None
    return map_openai_data(event_json(message.data, provider), provider)


def _stream_error(error: Any, provider: str) -> ProviderError:
    kind = (error.get("type") or error.get("code")) if isinstance(error, dict) else None
    message = f"{provider} stream error"
    if kind in ("rate_limit_exceeded", "rate_limit_error"):
        return ProviderRateLimited(message, provider=provider, status=None)
    if kind in ("invalid_request_error",):
        return ProviderBadRequest(message, provider=provider)
    if kind in ("server_error", "overloaded_error", "service_unavailable"):
        return ProviderOverloaded(message, provider=provider)
    return ProviderConnectionError(message, provider=provider)


@contextmanager
def map_openai_errors(provider: str = "openai") -> Iterator[None]:
    try:
        with map_transport_errors(provider):
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


def client_timeout(options: ProviderOptions) -> openai.Timeout:
    read, connect = backstop_timeouts(options)
    return openai.Timeout(read, connect=connect)


class _SDKClient(openai.AsyncOpenAI):
    """The SDK's client, each request URL parsed once: the SDK parses the endpoint's URL
    string anew for every request (``_prepare_url``), and an ``httpx2.URL`` is immutable,
    so one parse serves every request to it (a provider sends to one endpoint)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parsed_urls: dict[str, httpx2.URL] = {}
        self._header_templates: dict[tuple[Any, ...], httpx2.Headers] = {}

    def _build_headers(self, options: FinalRequestOptions, *,
                       retries_taken: int = 0) -> httpx2.Headers:
        """A copy of the headers the SDK built for the first such request: for a request
        with no headers, timeout or idempotency header of its own (every request of a
        provider), they depend only on the client (its default and auth headers, its
        timeout), the request's security options and the retry count, and the SDK merges
        and validates them anew every time (about 30 µs a request). A key provider, a
        provider runtime or a request of any other kind goes the SDK's way."""
        if (options.headers or not isinstance(options.timeout, openai.NotGiven)
                or (options.idempotency_key and self._idempotency_header)
                or not isinstance(self.api_key, str)
                or getattr(self, "_api_key_provider", None) is not None
                or getattr(self, "_provider_runtime", None) is not None):
            return super()._build_headers(options, retries_taken=retries_taken)
        key = (retries_taken, self.api_key, getattr(self, "admin_api_key", None),
               tuple(options.security.items()))
        template = self._header_templates.get(key)
        if template is None:
            template = super()._build_headers(options, retries_taken=retries_taken)
            if any(k[1:3] != key[1:3] for k in self._header_templates):
                self._header_templates.clear()  # a rotated key: the old one is not kept
            if len(self._header_templates) < MAX_HEADER_TEMPLATES:
                self._header_templates[key] = template
        return template.copy()

    @property
    def user_agent(self) -> str:  # the SDK's own (it names the client's class)
        return f"AsyncOpenAI/Python {openai.__version__}"

    def _prepare_url(self, url: str) -> httpx2.URL:
        parsed = self._parsed_urls.get(url)
        if parsed is None:
            parsed = super()._prepare_url(url)
            if len(self._parsed_urls) < MAX_REMEMBERED_URLS:
                self._parsed_urls[url] = parsed
        return parsed

    def platform_headers(self) -> dict[str, str]:
        """No platform headers: a provider's requests leave them out (``default_headers``
        omits them), and the SDK's would look the platform up on the event loop (a
        blocking read of the OS release, once) when its ``request`` had not done so in a
        thread."""
        return {}

    @functools.cached_property
    def _plain_credentials(self) -> bool:
        """A plain API key, and none of the SDK's other ways to authenticate (a key
        provider, workload identity, a provider runtime, custom auth): set when the client
        is made (``with_options`` and ``copy`` make a new one)."""
        return (isinstance(self.api_key, str) and self.custom_auth is None
                and getattr(self, "_api_key_provider", None) is None
                and getattr(self, "_provider_runtime", None) is None
                and getattr(self, "_workload_identity_auth", None) is None)

    async def stream_response(self, options: FinalRequestOptions) -> httpx2.Response:
        """A streamed raw response, as ``request(httpx2.Response, options, stream=True)``
        answers it for a client with a plain API key and no retries (every provider's),
        for options with no headers or redirect setting of their own (every provider
        request's): the SDK builds the request (auth, headers, URL, body, timeout) and
        makes its typed status errors, and the request goes to its HTTP client. What
        ``request`` adds around that does nothing for such a client and request (its retry
        loop runs once; its credential-provider, workload-identity and provider-runtime
        hooks are unset; the raw response is returned as it is) and costs about 0.1 ms a
        request. Anything else goes the SDK's whole way. ``options``: the request's own
        copy (an idempotency key is set on it when the client sends one, as ``request``
        does)."""
        if (self.max_retries or not self._plain_credentials or options.headers
                or not isinstance(options.max_retries, openai.NotGiven)
                or options.follow_redirects is not None):
            return await self.request(httpx2.Response, options, stream=True)
        if options.idempotency_key is None and self._idempotency_header:
            options.idempotency_key = self._idempotency_key()
        request = self._build_request(options, retries_taken=0)
        response = await self._client.send(request, stream=True)
        try:
            response.raise_for_status()
        except httpx2.HTTPStatusError as exc:
            if not response.is_closed:
                await response.aread()
            raise self._make_status_error_from_response(exc.response) from None
        return response


class OpenAIProvider:
    def __init__(self, options: ProviderOptions, *, api_key: str | None) -> None:
        timeout = client_timeout(options)
        self._client = _SDKClient(
            api_key=api_key or options.api_key or "unset",
            base_url=options.base_url,
            max_retries=0,
            timeout=timeout,
            default_headers=without_platform_headers(openai.omit),
            # httpx2's client over our aiohttp transport (providers/aiohttp_transport.py).
            http_client=sdk_http_client(timeout),
        )
        # The options of every request but its body and idempotency key, as client.post
        # constructs them, once. The endpoint is joined to the base URL (which ends in "/")
        # here: an absolute URL is taken as it is, instead of being merged on every request.
        self._completions = FinalRequestOptions.construct(
            method="post", url=f"{self._client.base_url}chat/completions")

    @property
    def name(self) -> str:
        return "openai"

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        return stream_sse_answer(functools.partial(self._send, request), map_openai_event,
                                 self.name, map_openai_errors(self.name))

    async def _send(self, request: ProviderRequest) -> httpx2.Response:
        # The SDK's raw request (``cast_to=httpx.Response``): its auth, base URL, timeouts
        # and status errors, without re-validating our own typed params. The body goes as
        # orjson bytes (``content``): the SDK's JSON encoder is slower. (No idempotency
        # key: the OpenAI client sends none.)
        options = self._completions.model_copy(update={
            "content": orjson.dumps(build_openai_params(request))})
        return await self._client.stream_response(options)

    async def aclose(self) -> None:
        await self._client.close()
