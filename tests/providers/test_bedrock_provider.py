"""Bedrock: pure mapping without sockets, then wire details through aioboto3 and the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EventStreamError

from providers.base import Finish, Provider, TextDelta, UsageReport
from providers.bedrock_provider import (
    bedrock_client_error,
    build_converse_params,
    map_converse_event,
)
from providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
)
from tests.fakes.providers import chat_request, provider_for
from tests.fakes.upstream import FakeUpstream, error_after, status

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


@pytest.fixture
async def provider(bedrock_fake: FakeUpstream) -> AsyncIterator[Provider]:
    made = provider_for("bedrock", bedrock_fake)
    yield made
    await made.aclose()


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

