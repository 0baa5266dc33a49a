"""``bedrock``: the Converse API's ``converse_stream`` through aioboto3.

Wire mapping is pure (``build_converse_params``, ``map_converse_event``,
``map_converse_message``, ``bedrock_client_error``); the I/O is the client call inside
``map_bedrock_errors()``. aioboto3 sends the request (signing, endpoint, HTTP errors);
the answer's event stream is read straight from aiohttp and decoded by
:mod:`providers.eventstream` and orjson, not by botocore's model-driven parser, which
cost more than the rest of the answer (``bench/provider_cpu.py``). A client whose body
is not aiohttp's is read through botocore's parser as before.
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
from providers.aiohttp_transport import MAX_UPSTREAM_CONNECTIONS, StallWatchdog, watched_body
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
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
    error_for_status,
)
from providers.eventstream import EventMessage, EventStreamDecoder, MalformedEventStream
from providers.reading import MALFORMED, event_json, malformed_event, read_events
from providers.transport import backstop_timeouts
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
    """One parsed ``ConverseStreamOutput`` member to our events (unknown ones: none). A
    member of the wrong shape raises one of ``providers.reading.MALFORMED`` (``TypeError`` for
    a field of the wrong type, ``AttributeError`` for an object that is not one)."""
    if "contentBlockDelta" in event:
        text = delta_text(event["contentBlockDelta"].get("delta", {}).get("text"))
        return [TextDelta(text)] if text else []
    if "messageStop" in event:
        return [Finish(_FINISH.get(event["messageStop"].get("stopReason", ""), "stop"))]
    if "metadata" in event:
        usage = event["metadata"].get("usage", {})
        return [UsageReport(prompt_tokens=token_count(usage.get("inputTokens")),
                            completion_tokens=token_count(usage.get("outputTokens")))]
    return []


# The events ``map_converse_event`` reads; the others (messageStart, contentBlockStart and
# contentBlockStop, and any AWS adds) carry nothing of ours and are passed over unread.
_MAPPED_EVENTS = frozenset({"contentBlockDelta", "messageStop", "metadata"})


def map_converse_message(message: EventMessage, provider: str = "bedrock"
                         ) -> list[ProviderEvent]:
    """One event-stream message of ``ConverseStream``, told apart as botocore tells them:
    an exception (``:exception-type``) or error (``:error-code``) raises the error it
    names; anything else is an event, by ``:event-type``, whose JSON payload is read only
    when it is one we map (an unknown type is passed over, whatever its payload)."""
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "exception" or kind == "error":
        code = headers.get(":exception-type" if kind == "exception" else ":error-code")
        raise stream_exception(code if isinstance(code, str) else "", provider)
    event_type = headers.get(":event-type")
    if event_type not in _MAPPED_EVENTS:
        return []
    payload = event_json(message.payload, provider) if message.payload else {}
    return map_converse_event({event_type: payload})


def stream_exception(code: str, provider: str = "bedrock", status: int | None = None
                     ) -> ProviderError:
    """Bedrock's error by its code (an exception frame's, or an HTTP error's): an unknown
    one is overload."""
    kind = _ERRORS_BY_CODE.get(code.lower(), ProviderOverloaded)
    return kind(f"{provider} failed: {code or status or 'an unnamed error'}",
                provider=provider, status=status)


def read_converse_events(decoder: EventStreamDecoder, raw: bytes, provider: str
                         ) -> tuple[list[ProviderEvent], ProviderError | None]:
    """``providers.reading.read_events`` over the event-stream messages of one network
    read: an exception message, or bytes that are not a valid event stream or event, cut
    it short (a broken stream) after the events before."""
    events, _, error = read_events(_messages(decoder, raw, provider), map_converse_message,
                                   provider)
    return events, error


def _messages(decoder: EventStreamDecoder, raw: bytes, provider: str
              ) -> Iterator[EventMessage]:
    try:
        yield from decoder.feed(raw)
    except MalformedEventStream as exc:
        raise ProviderConnectionError(f"{provider} sent a malformed event stream",
                                      provider=provider) from exc


def raw_body(events: Any) -> aiohttp.ClientResponse | None:
    """The response under aiobotocore's event stream when aiohttp reads it (aiobotocore's
    default session), else None: read through botocore's parser then."""
    response = getattr(events, "_raw_stream", None)
    return response if isinstance(response, aiohttp.ClientResponse) else None


def bedrock_client_error(exc: ClientError, provider: str = "bedrock") -> ProviderError:
    """By error code, else by HTTP status; an unknown stream exception is overload."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code.lower() in _ERRORS_BY_CODE or isinstance(exc, EventStreamError) \
            or not isinstance(status, int):
        return stream_exception(code, provider, status)
    return error_for_status(status, f"{provider} failed: {code or status}", provider=provider)


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
    """No botocore retries; its timeouts are a backstop, the router enforces the real ones.
    As many connections as the other providers' transport (botocore's default is 10: an
    eleventh stream at once would wait for one of them to end)."""
    return BotoConfig(
        connect_timeout=options.connect_timeout_s,
        read_timeout=backstop_timeouts(options)[0],
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=MAX_UPSTREAM_CONNECTIONS,
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
        body = raw_body(events)
        batches = self._read_raw(body) if body is not None else self._read_parsed(events)
        finished = False  # messageStop came (its stop reason)
        try:
            with map_bedrock_errors(self.name):
                async for batch in batches:
                    for mapped in batch:
                        finished = finished or type(mapped) is Finish
                        yield mapped
            if not finished:  # the stream ended cleanly, but the answer did not
                raise ProviderConnectionError(f"{self.name} stream ended early",
                                              provider=self.name)
        finally:
            await batches.aclose()
            events.close()

    async def _read_raw(self, body: aiohttp.ClientResponse
                        ) -> AsyncGenerator[list[ProviderEvent], None]:
        """The events of each read of the body, decoded here (``read_converse_events``),
        under the transport's stall watchdog."""
        decoder = EventStreamDecoder()
        chunks = watched_body(body, backstop_timeouts(self._options)[0])
        try:
            async for raw in chunks:
                mapped, error = read_converse_events(decoder, raw, self.name)
                yield mapped
                if error is not None:
                    raise error
        finally:
            if isinstance(chunks, StallWatchdog):
                chunks.close()

    async def _read_parsed(self, events: Any) -> AsyncGenerator[list[ProviderEvent], None]:
        """The events of each member botocore parses (a client whose body is not aiohttp's);
        botocore parses in the iteration, so the try spans it."""
        try:
            async for event in events:
                yield map_converse_event(event)
        except MALFORMED as exc:  # a member of the wrong shape
            raise malformed_event(self.name, exc) from exc

    async def aclose(self) -> None:
        async with self._lock:
            self._client = None
            await self._stack.aclose()
