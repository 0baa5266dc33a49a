"""Bedrock: pure mapping without sockets, then wire details through aioboto3 and the fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from botocore.exceptions import ClientError, EventStreamError

from gateway.config import ProviderOptions
from providers import bedrock_provider
from providers.base import Finish, Provider, TextDelta, UsageReport
from providers.bedrock_provider import (
    BedrockProvider,
    bedrock_client_error,
    build_converse_params,
    map_converse_event,
    map_converse_message,
    raw_body,
    read_converse_events,
)
from providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
)
from providers.eventstream import EventMessage, EventStreamDecoder
from tests.fakes.eventstream import (
    event_frame,
    exception_frame,
    raw_event_frame,
)
from tests.fakes.providers import (
    TEST_REGION,
    chat_request,
    dummy_session,
    events_until,
    provider_for,
)
from tests.fakes.upstream import (
    FakeUpstream,
    error_after,
    hang_before_first_token,
    ok,
    status,
)

CONVERSATION = chat_request(
    ("system", "You are terse."), ("user", "Hi"), ("user", "Still there?"),
    ("assistant", "Yes."), ("user", "Good"), model="anthropic.claude-test-v1:0", max_tokens=77)


def test_converse_params() -> None:
    assert build_converse_params(CONVERSATION) == {
        "modelId": "anthropic.claude-test-v1:0",
        "system": [{"text": "You are terse."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hi\n\nStill there?"}]},
            {"role": "assistant", "content": [{"text": "Yes."}]},
            {"role": "user", "content": [{"text": "Good"}]},
        ],
        "inferenceConfig": {"maxTokens": 77},
    }
    assert "system" not in build_converse_params(chat_request(("user", "Hi")))


def test_converse_events_map() -> None:
    assert map_converse_event({"messageStart": {"role": "assistant"}}) == []
    assert map_converse_event(
        {"contentBlockDelta": {"delta": {"text": "Hey"}, "contentBlockIndex": 0}}
    ) == [TextDelta("Hey")]
    assert map_converse_event({"messageStop": {"stopReason": "max_tokens"}}) == [
        Finish("length")]
    assert map_converse_event({"metadata": {"usage": {
        "inputTokens": 5, "outputTokens": 9, "totalTokens": 14}, "metrics": {}}}) == [
        UsageReport(prompt_tokens=5, completion_tokens=9)]


def _client_error(code: str, http_status: int, *, stream: bool = False) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "text is not matched"},
                     "ResponseMetadata": {"HTTPStatusCode": http_status}}
    if stream:
        return EventStreamError(response, "ConverseStream")
    return ClientError(response, "ConverseStream")


@pytest.mark.parametrize(("code", "http_status", "stream", "expected"), [
    ("ThrottlingException", 429, False, ProviderRateLimited),
    ("ModelNotReadyException", 429, False, ProviderOverloaded),
    ("ServiceUnavailableException", 503, False, ProviderOverloaded),
    ("InternalServerException", 500, False, ProviderOverloaded),
    ("ModelTimeoutException", 408, False, ProviderTimeout),
    ("ValidationException", 400, False, ProviderBadRequest),
    ("AccessDeniedException", 403, False, ProviderAuthError),
    ("SomethingNew", 502, False, ProviderOverloaded),
    ("SomethingNew", 409, False, ProviderBadRequest),
    ("throttlingException", 400, True, ProviderRateLimited),
    ("modelStreamErrorException", 400, True, ProviderOverloaded),
    ("validationException", 400, True, ProviderBadRequest),
    ("somethingNew", 400, True, ProviderOverloaded),
])
def test_client_errors_map_by_code_then_status(code: str, http_status: int, stream: bool,
                                               expected: type[ProviderError]) -> None:
    error = bedrock_client_error(_client_error(code, http_status, stream=stream))
    assert type(error) is expected


def _message(payload: bytes = b"{}", **headers: str) -> EventMessage:
    return EventMessage(dict(headers), payload)


def _typed(event_type: str, payload: bytes) -> EventMessage:
    return _message(payload, **{":message-type": "event", ":event-type": event_type})


def test_event_stream_messages_map() -> None:
    delta = b'{"contentBlockIndex":0,"delta":{"text":"Hey"}}'
    assert map_converse_message(_typed("contentBlockDelta", delta)) == [TextDelta("Hey")]
    # As botocore reads them: no message type is an event; an unknown event type, or none,
    # is passed over unread, whatever its payload (AWS adds event types).
    assert map_converse_message(_message(delta, **{":event-type": "contentBlockDelta"})) == [
        TextDelta("Hey")]
    for unread in (_typed("somethingNew", b"not json"), _typed("messageStart", b"[1, 2]"),
                   _message(b"not json", **{":message-type": "event"}),
                   _message(b"{}", **{":message-type": "surprise"})):
        assert map_converse_message(unread) == []
    with pytest.raises(ProviderRateLimited):
        map_converse_message(_message(**{":message-type": "exception",
                                         ":exception-type": "throttlingException"}))
    for overload in ({":exception-type": "newException"}, {}):  # unknown or unnamed
        with pytest.raises(ProviderOverloaded):
            map_converse_message(_message(**{":message-type": "exception", **overload}))
    with pytest.raises(ProviderBadRequest):
        map_converse_message(_message(**{":message-type": "error",
                                         ":error-code": "ValidationException"}))
    with pytest.raises(ProviderConnectionError):  # a mapped event's payload is no object
        map_converse_message(_typed("metadata", b"[1]"))


def test_text_of_the_wrong_type_makes_a_broken_stream() -> None:
    frame = raw_event_frame("contentBlockDelta", b'{"delta":{"text":5}}')
    events, error = read_converse_events(EventStreamDecoder(), frame, "bedrock")
    assert events == [] and isinstance(error, ProviderConnectionError)
    assert isinstance(error.__cause__, TypeError)


@pytest.mark.parametrize(("usage", "billed"), [
    (b'{"inputTokens":"3","outputTokens":1}', UsageReport(None, 1)),
    (b'{"inputTokens":3,"outputTokens":-1}', UsageReport(3, None)),
    (b'{"inputTokens":true,"outputTokens":2.0}', UsageReport(None, 2)),
], ids=["string", "negative", "bool-and-whole-float"])
def test_counts_of_the_wrong_type_are_not_billed(usage: bytes, billed: UsageReport) -> None:
    """Not reported, then: the gateway's own count stands (the answer came whole)."""
    frame = raw_event_frame("metadata", b'{"usage":' + usage + b"}")
    assert read_converse_events(EventStreamDecoder(), frame, "bedrock") == ([billed], None)


def test_a_read_keeps_the_events_before_what_cut_it() -> None:
    delta = event_frame("contentBlockDelta", {"delta": {"text": "a"}})
    events, error = read_converse_events(
        EventStreamDecoder(), delta + delta + exception_frame("throttlingException", "x")
        + delta, "bedrock")
    assert events == [TextDelta("aa")] and isinstance(error, ProviderRateLimited)
    misshapen = event_frame("contentBlockDelta", {"delta": "a string"})  # type: ignore[dict-item]
    events, error = read_converse_events(EventStreamDecoder(), delta + misshapen, "bedrock")
    assert events == [TextDelta("a")] and isinstance(error, ProviderConnectionError)
    assert isinstance(error.__cause__, AttributeError)  # kept: a mapping bug stays visible
    damaged = delta[:-1] + bytes([delta[-1] ^ 1])
    events, error = read_converse_events(EventStreamDecoder(), delta + damaged, "bedrock")
    assert events == [TextDelta("a")] and isinstance(error, ProviderConnectionError)


@pytest.fixture(params=["raw", "botocore"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each behaviour through both readings of the answer: ours (the body straight from
    aiohttp), and botocore's parser, which a client whose body is not aiohttp's gets."""
    if request.param == "botocore":
        monkeypatch.setattr(bedrock_provider, "raw_body", lambda events: None)
    return str(request.param)


@pytest.fixture
async def provider(bedrock_fake: FakeUpstream, read_path: str) -> AsyncIterator[Provider]:
    made = provider_for("bedrock", bedrock_fake)
    yield made
    await made.aclose()


async def test_aiobotocore_hands_over_an_aiohttp_body(bedrock_fake: FakeUpstream) -> None:
    """The raw reading is what runs with the aiobotocore installed (an upgrade that moved
    its body would fall back to botocore's parser: slower, and caught here)."""
    provider = BedrockProvider(ProviderOptions(base_url=bedrock_fake.url), region=TEST_REGION,
                               session=dummy_session())
    try:
        client = await provider._started()
        response = await client.converse_stream(**build_converse_params(CONVERSATION))
        events = response["stream"]
        try:
            assert raw_body(events) is not None
        finally:
            events.close()
    finally:
        await provider.aclose()


async def test_streams_beyond_botocores_ten_connections_run_at_once(
        bedrock_fake: FakeUpstream) -> None:
    """botocore pools 10 connections unless told otherwise: the 11th stream at once would
    wait for one of the first ten to end."""
    streams = 12
    bedrock_fake.script(*[hang_before_first_token()] * streams)
    provider = provider_for("bedrock", bedrock_fake)

    async def first_event() -> None:
        async for _ in provider.stream(CONVERSATION):
            break

    waiting = [asyncio.create_task(first_event()) for _ in range(streams)]
    try:
        await bedrock_fake.wait_for_requests(streams, within_s=5.0)
        assert bedrock_fake.request_count == streams
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await provider.aclose()


@pytest.fixture
async def raw_bedrock() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A Bedrock endpoint that answers each request with the next body of the list given."""
    bodies: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=bodies.pop(0),
                            content_type="application/vnd.amazon.eventstream")

    app = web.Application()
    app.router.add_post("/model/{modelId}/converse-stream", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), bodies
    finally:
        await server.close()


def _raw_provider(url: str) -> BedrockProvider:
    return BedrockProvider(ProviderOptions(base_url=url), region=TEST_REGION,
                           session=dummy_session())


START = event_frame("messageStart", {"role": "assistant"})
DELTA = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
STOP = event_frame("messageStop", {"stopReason": "end_turn"})
META = event_frame("metadata", {"usage": {"inputTokens": 4, "outputTokens": 1}})


@pytest.mark.parametrize(("body", "complete"), [
    (START + DELTA + STOP, True),
    (START + DELTA + STOP[:-5], False),  # cut in the middle of the finish
    (START + DELTA + STOP + META[:-5], True),  # a clean end mid-message after the finish
    (START + DELTA, False),  # ended cleanly before any finish
    (START + DELTA + DELTA[:-1] + bytes([DELTA[-1] ^ 1]) + STOP, False),  # damaged
    (START + DELTA + raw_event_frame("messageStop", b"{") + STOP, False),
], ids=["complete", "cut-mid-message", "cut-after-finish", "no-finish", "bad-checksum",
        "bad-json"])
async def test_a_broken_event_stream_is_a_broken_answer(
        raw_bedrock: tuple[str, list[bytes]], body: bytes, complete: bool) -> None:
    url, bodies = raw_bedrock
    bodies.append(body)
    provider = _raw_provider(url)
    if complete:
        try:
            seen = [e async for e in provider.stream(CONVERSATION)]
        finally:
            await provider.aclose()
    else:
        seen = await events_until(provider, CONVERSATION, ProviderConnectionError)
    assert TextDelta("Hi") in seen  # what came before the break still came
    assert (Finish("stop") in seen) is complete


async def test_answers_read_alike_both_ways(provider: Provider, bedrock_fake: FakeUpstream
                                            ) -> None:
    bedrock_fake.script(ok("Hel", "lo", " there", usage=(7, 3), finish="length"))
    events = [e async for e in provider.stream(CONVERSATION)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello there"
    assert events[-2:] == [Finish("length"), UsageReport(prompt_tokens=7, completion_tokens=3)]


async def test_request_on_the_wire(provider: Provider, bedrock_fake: FakeUpstream) -> None:
    [_ async for _ in provider.stream(CONVERSATION)]
    [call] = bedrock_fake.requests
    assert call.path == "/model/anthropic.claude-test-v1:0/converse-stream"
    assert call.match_info["modelId"] == "anthropic.claude-test-v1:0"
    assert call.body["system"] == [{"text": "You are terse."}]
    assert call.body["inferenceConfig"] == {"maxTokens": 77}
    assert call.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/bedrock/" in call.headers["authorization"]


async def test_one_client_serves_many_requests(provider: Provider,
                                               bedrock_fake: FakeUpstream) -> None:
    for _ in range(3):
        assert [e async for e in provider.stream(CONVERSATION) if isinstance(e, TextDelta)]
    assert bedrock_fake.request_count == 3


@pytest.mark.parametrize(("answer", "expected"), [
    (status(429), ProviderRateLimited),
    (status(429, error_code="ModelNotReadyException"), ProviderOverloaded),
    (status(503), ProviderOverloaded),
    (status(400), ProviderBadRequest),
    (status(403), ProviderAuthError),
])
async def test_http_errors_map_by_error_code(provider: Provider, bedrock_fake: FakeUpstream,
                                             answer: Any, expected: type[ProviderError]) -> None:
    bedrock_fake.script(answer)
    with pytest.raises(expected):
        [_ async for _ in provider.stream(CONVERSATION)]
    assert bedrock_fake.request_count == 1  # botocore retries are off


async def test_exception_frame_mid_stream(provider: Provider, bedrock_fake: FakeUpstream) -> None:
    bedrock_fake.script(error_after(2, kind="rate_limited"))
    seen = []
    with pytest.raises(ProviderRateLimited):
        async for item in provider.stream(CONVERSATION):
            seen.append(item)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["part0 ", "part1 "]


async def test_a_member_that_is_no_object_is_a_broken_answer_both_ways(
        raw_bedrock: tuple[str, list[bytes]], read_path: str) -> None:
    """botocore parses the payload while iterating (and fails on a list), we after: both
    readings make it a broken stream, not an internal error."""
    url, bodies = raw_bedrock
    bodies.append(START + DELTA + STOP + raw_event_frame("metadata", b"[1]"))
    seen = await events_until(_raw_provider(url), CONVERSATION, ProviderConnectionError)
    assert seen[:1] == [TextDelta("Hi")]
