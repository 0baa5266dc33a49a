"""``bedrock``: the Converse API's ``converse_stream`` through aioboto3.

Wire mapping is pure (``build_converse_params``, ``map_converse_event``,
``bedrock_client_error``); the I/O is the client call inside ``map_bedrock_errors()``.
Credentials come from the standard AWS chain (or the session handed in); the endpoint
from ``options.base_url``, else boto's own ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` /
``AWS_ENDPOINT_URL``. One client lives for the provider's lifetime: opened on first
use, closed by ``aclose()``. Botocore's retries are off: the router decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config as BotoConfig
from botocore.eventstream import ParserError as EventStreamParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EventStreamError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

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
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
    error_for_status,
)
from providers.turns import split_turns

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "stop",
    "guardrail_intervened": "stop", "content_filtered": "stop",
}

# Error codes, lower-cased: HTTP errors say ``ThrottlingException``, exception frames in
# the event stream ``throttlingException``.
_ERRORS_BY_CODE: dict[str, type[ProviderError]] = {
    "throttlingexception": ProviderRateLimited,
    "toomanyrequestsexception": ProviderRateLimited,
    "serviceunavailableexception": ProviderOverloaded,
    "modelnotreadyexception": ProviderOverloaded,
    "internalserverexception": ProviderOverloaded,
    "modelstreamerrorexception": ProviderOverloaded,
    "modelerrorexception": ProviderOverloaded,
    "modeltimeoutexception": ProviderTimeout,
    "validationexception": ProviderBadRequest,
    "resourcenotfoundexception": ProviderBadRequest,
    "accessdeniedexception": ProviderAuthError,
    "unrecognizedclientexception": ProviderAuthError,
    "invalidsignatureexception": ProviderAuthError,
    "expiredtokenexception": ProviderAuthError,
}


def build_converse_params(request: ProviderRequest) -> dict[str, Any]:
    split = split_turns(request.messages)
    params: dict[str, Any] = {
        "modelId": request.model,
        "messages": [{"role": t.role, "content": [{"text": t.content}]} for t in split.turns],
        "inferenceConfig": {"maxTokens": request.max_tokens},
    }
    if split.system:
        params["system"] = [{"text": split.system}]
    return params


def map_converse_event(event: Mapping[str, Any]) -> list[ProviderEvent]:
    """One parsed ``ConverseStreamOutput`` member to our events (unknown ones: none)."""
    if "contentBlockDelta" in event:
        text = event["contentBlockDelta"].get("delta", {}).get("text")
        return [TextDelta(text)] if text else []
    if "messageStop" in event:
        return [Finish(_FINISH.get(event["messageStop"].get("stopReason", ""), "stop"))]
    if "metadata" in event:
        usage = event["metadata"].get("usage", {})
        return [UsageReport(prompt_tokens=usage.get("inputTokens"),
                            completion_tokens=usage.get("outputTokens"))]
    return []


def bedrock_client_error(exc: ClientError, provider: str = "bedrock") -> ProviderError:
    """By error code, else by HTTP status; an unknown stream exception is overload."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = f"{provider} failed: {code or status}"
    kind = _ERRORS_BY_CODE.get(code.lower())
    if kind is not None:
        return kind(message, provider=provider, status=status)
    if isinstance(exc, EventStreamError) or not isinstance(status, int):
        return ProviderOverloaded(message, provider=provider, status=status)
    return error_for_status(status, message, provider=provider)


@contextmanager
def map_bedrock_errors(provider: str = "bedrock") -> Iterator[None]:
    try:
        yield
    except ClientError as exc:  # HTTP errors and exception frames (EventStreamError)
        raise bedrock_client_error(exc, provider) from exc
    except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
        raise ProviderTimeout(f"{provider} timed out", provider=provider) from exc
    except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
        raise ProviderAuthError(f"{provider} is not configured: {type(exc).__name__}",
                                provider=provider) from exc
    except (BotoCoreError, EventStreamParserError, aiohttp.ClientError) as exc:
        raise ProviderConnectionError(f"{provider} connection failed", provider=provider) from exc


def client_config(options: ProviderOptions) -> BotoConfig:
    """No botocore retries; its timeouts are a backstop, the router enforces the real ones."""
    return BotoConfig(
        connect_timeout=options.connect_timeout_s,
        read_timeout=max(options.first_token_timeout_s, options.chunk_timeout_s),
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


class BedrockProvider:
    def __init__(self, options: ProviderOptions, *, region: str | None,
                 session: aioboto3.Session | None = None) -> None:
        self._options = options
        self._region = region
        self._session = session or aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return "bedrock"

    async def start(self) -> None:
        """Open the client now rather than on the first request (loading it takes a while)."""
        with map_bedrock_errors(self.name):
            await self._started()

    async def _started(self) -> Any:
        """The one ``bedrock-runtime`` client, entered on first use."""
        async with self._lock:
            if self._client is None:
                client = self._session.client(
                    "bedrock-runtime", region_name=self._region,
                    endpoint_url=self._options.base_url, config=client_config(self._options))
                self._client = await self._stack.enter_async_context(client)
        return self._client

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        with map_bedrock_errors(self.name):
            client = await self._started()
            response = await client.converse_stream(**build_converse_params(request))
        events = response["stream"]
        finished = False  # messageStop came (its stop reason)
        try:
            with map_bedrock_errors(self.name):
                async for event in events:
                    for mapped in map_converse_event(event):
                        finished = finished or type(mapped) is Finish
                        yield mapped
            if not finished:  # the stream ended cleanly, but the answer did not
                raise ProviderConnectionError(f"{self.name} stream ended early",
                                              provider=self.name)
        finally:
            events.close()

    async def aclose(self) -> None:
        async with self._lock:
            self._client = None
            await self._stack.aclose()
