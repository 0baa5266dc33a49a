"""Anthropic: pure mapping without sockets, then wire details through the SDK and the fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest

from gateway.config import ProviderOptions
from providers.anthropic_provider import (
    AnthropicProvider,
    anthropic_status_error,
    build_anthropic_params,
    map_anthropic_data,
    map_anthropic_event,
)
from providers.base import Finish, Provider, TextDelta, UsageReport
from providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderOverloaded,
    ProviderRateLimited,
)
from providers.sse import SSEDecoder, read_sse_events
from providers.transport import PLATFORM_HEADERS
from tests.fakes.providers import TEST_API_KEY, chat_request, provider_for
from tests.fakes.upstream import FakeUpstream, error_after, ok, status

CONVERSATION = chat_request(
    ("system", "You are terse."), ("user", "Hi"), ("user", "Still there?"),
    ("assistant", "Yes."), ("user", "Good"), model="claude-test", max_tokens=99)


def test_system_goes_top_level_and_same_role_turns_merge() -> None:
    params = build_anthropic_params(CONVERSATION)
    assert params.system == "You are terse."
    assert params.messages == [
        {"role": "user", "content": "Hi\n\nStill there?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Good"},
    ]
    assert (params.model, params.max_tokens) == ("claude-test", 99)


def test_events_map_to_usage_text_and_finish() -> None:
    start = {"type": "message_start", "message": {
        "id": "m", "type": "message", "role": "assistant", "model": "c", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3,
                  "cache_creation_input_tokens": None}}}
    assert map_anthropic_data(start) == [UsageReport(prompt_tokens=10)]
    delta = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "Hey"}}
    assert map_anthropic_data(delta) == [TextDelta("Hey")]
    end = {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
           "usage": {"output_tokens": 12}}
    assert map_anthropic_data(end) == [UsageReport(completion_tokens=12), Finish("length")]
    for nothing in ({"type": "ping"}, {"type": "content_block_stop", "index": 0},
                    {"type": "content_block_start", "index": 0,
                     "content_block": {"type": "text", "text": ""}},
                    {"type": "content_block_delta", "index": 0,  # not text: not ours
                     "delta": {"type": "input_json_delta", "partial_json": "{"}}):
        assert map_anthropic_data(nothing) == []


@pytest.mark.parametrize(("error_type", "expected"), [
    ("overloaded_error", ProviderOverloaded), ("rate_limit_error", ProviderRateLimited),
    ("invalid_request_error", ProviderBadRequest), ("something_new", ProviderOverloaded)])
def test_an_error_event_maps_by_its_type(error_type: str, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        map_anthropic_data({"type": "error", "error": {"type": error_type, "message": "x"}})


def test_a_read_ends_at_message_stop_and_keeps_what_came_before_an_error() -> None:
    def sse(data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

    def read(raw: bytes) -> tuple[list[Any], bool, Exception | None]:
        """One network read, as the provider reads it (a fresh stream each)."""
        return read_sse_events(SSEDecoder(), raw, map_anthropic_event, "anthropic")

    delta = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "a"}}
    events, done, error = read(sse(delta) + sse(delta) + sse({"type": "message_stop"}))
    assert (events, done, error) == ([TextDelta("aa")], True, None)  # one read: joined
    events, done, error = read(sse(delta) + sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}))
    assert events == [TextDelta("a")] and not done
    assert isinstance(error, ProviderOverloaded)
    events, done, error = read(b"event: x\ndata: {oops\n\n")
    assert isinstance(error, ProviderConnectionError)
    events, done, error = read(  # an object's place taken by a string
        sse(delta) + sse({"type": "content_block_delta", "delta": "x"}))
    assert events == [TextDelta("a")] and isinstance(error, ProviderConnectionError)
    events, done, error = read(b"event: ping\n\n" + sse(delta))
    assert (events, error) == ([TextDelta("a")], None)  # an event without data: nothing


def test_a_message_start_without_usage_reports_none() -> None:
    """Nothing reported stays unreported (the gateway counts the prompt itself), not 0."""
    assert map_anthropic_data({"type": "message_start", "message": {"id": "m"}}) == []


def sent_key(headers: dict[str, str]) -> str | None:
    """The SDK sends the key as ``x-api-key`` or as a bearer token, by version."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or bearer or None


def _status_error(code: int, body: dict[str, Any], headers: dict[str, str] | None = None
                  ) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://fake/v1/messages")
    response = httpx2.Response(code, headers=headers or {}, request=request)
    return anthropic.APIStatusError("boom", response=response, body=body)


@pytest.mark.parametrize(("code", "error_type", "expected"), [
    (429, "rate_limit_error", ProviderRateLimited), (529, "overloaded_error", ProviderOverloaded),
    (400, "invalid_request_error", ProviderBadRequest), (401, "authentication_error",
                                                          ProviderAuthError),
    (200, "overloaded_error", ProviderOverloaded), (200, "rate_limit_error", ProviderRateLimited),
    (200, "invalid_request_error", ProviderBadRequest), (200, "something_new", ProviderOverloaded),
])
def test_status_errors_map_by_status_then_typed_body(code: int, error_type: str,
                                                     expected: type[Exception]) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": "text is not matched"}}
    assert type(anthropic_status_error(_status_error(code, body), "anthropic")) is expected


def test_retry_after_header_is_read() -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    error = anthropic_status_error(_status_error(429, body, {"retry-after": "2.5"}), "anthropic")
    assert isinstance(error, ProviderRateLimited)
    assert error.retry_after_s == 2.5


@pytest.fixture
async def provider(anthropic_fake: FakeUpstream) -> AsyncIterator[Provider]:
    made = provider_for("anthropic", anthropic_fake)
    yield made
    await made.aclose()


async def test_request_on_the_wire(provider: Provider, anthropic_fake: FakeUpstream) -> None:
    [_ async for _ in provider.stream(CONVERSATION)]
    [call] = anthropic_fake.requests
    assert call.body["system"] == "You are terse."
    assert [m["role"] for m in call.body["messages"]] == ["user", "assistant", "user"]
    assert call.body["stream"] is True
    assert call.body["max_tokens"] == 99
    assert sent_key(call.headers) == TEST_API_KEY
    assert call.headers["x-stainless-retry-count"] == "0"
    assert call.headers["anthropic-version"]
    assert not {name for name in call.headers if name.startswith("x-stainless-")} & {
        name.lower() for name in PLATFORM_HEADERS}  # the gateway host is not described


async def test_no_system_prompt_sends_no_system(provider: Provider,
                                                anthropic_fake: FakeUpstream) -> None:
    [_ async for _ in provider.stream(chat_request(("user", "Hi")))]
    assert "system" not in anthropic_fake.requests[0].body


async def test_overloaded_529_and_retry_after(provider: Provider,
                                              anthropic_fake: FakeUpstream) -> None:
    anthropic_fake.script(status(529), status(429, retry_after=1.25))
    with pytest.raises(ProviderOverloaded) as overloaded:
        [_ async for _ in provider.stream(CONVERSATION)]
    assert overloaded.value.status == 529
    with pytest.raises(ProviderRateLimited) as limited:
        [_ async for _ in provider.stream(CONVERSATION)]
    assert limited.value.retry_after_s == 1.25
    assert anthropic_fake.request_count == 2  # SDK retries are off


async def test_error_event_mid_stream_maps_by_type(provider: Provider,
                                                   anthropic_fake: FakeUpstream) -> None:
    anthropic_fake.script(error_after(2, kind="rate_limited"))
    seen = []
    with pytest.raises(ProviderRateLimited):
        async for item in provider.stream(CONVERSATION):
            seen.append(item)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["part0 ", "part1 "]


async def test_base_url_from_options_not_env(anthropic_fake: FakeUpstream,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    made = provider_for("anthropic", anthropic_fake, ProviderOptions())
    anthropic_fake.script(ok("fine"))
    try:
        assert [e async for e in made.stream(CONVERSATION) if isinstance(e, TextDelta)]
    finally:
        await made.aclose()
    assert sent_key(anthropic_fake.requests[0].headers) == TEST_API_KEY


@pytest.mark.parametrize(("base_url", "endpoint"), [
    ("http://upstream.test", "http://upstream.test/v1/messages"),
    ("http://upstream.test/", "http://upstream.test/v1/messages"),
    ("https://proxy.test/anthropic/", "https://proxy.test/anthropic/v1/messages")])
async def test_the_endpoint_keeps_the_base_urls_path(base_url: str, endpoint: str) -> None:
    made = AnthropicProvider(ProviderOptions(base_url=base_url), api_key="k")
    try:
        assert made._messages.url == endpoint
    finally:
        await made.aclose()
