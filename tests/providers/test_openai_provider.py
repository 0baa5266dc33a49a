"""OpenAI: the provider's wire details, and the fake driven by the SDK without the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from providers.base import Provider, TextDelta
from providers.errors import ProviderRateLimited
from tests.fakes.providers import TEST_API_KEY, chat_request, provider_for
from tests.fakes.upstream import FakeUpstream, ok, status

CONVERSATION = chat_request(("system", "You are terse."), ("user", "Hi"), model="gpt-test",
                            max_tokens=42)


@pytest.fixture
async def provider(openai_fake: FakeUpstream) -> AsyncIterator[Provider]:
    made = provider_for("openai", openai_fake)
    yield made
    await made.aclose()


@pytest.fixture
async def client(openai_fake: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(api_key=TEST_API_KEY, base_url=f"{openai_fake.url}/v1",
                             max_retries=0)
    yield sdk
    await sdk.close()


async def test_request_on_the_wire(provider: Provider, openai_fake: FakeUpstream) -> None:
    [_ async for _ in provider.stream(CONVERSATION)]
    [call] = openai_fake.requests
    assert call.path == "/v1/chat/completions"
    assert call.body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert call.body["stream_options"] == {"include_usage": True}
    assert call.body["max_tokens"] == 42
    assert call.headers["authorization"] == f"Bearer {TEST_API_KEY}"


async def test_retry_after_is_read(provider: Provider, openai_fake: FakeUpstream) -> None:
    openai_fake.script(status(429, retry_after=0.75))
    with pytest.raises(ProviderRateLimited) as caught:
        [_ async for _ in provider.stream(CONVERSATION)]
    assert caught.value.retry_after_s == 0.75
    assert openai_fake.request_count == 1


async def test_fake_answers_without_stream(client: openai.AsyncOpenAI,
                                           openai_fake: FakeUpstream) -> None:
    openai_fake.script(ok("Whole", " answer", usage=(9, 2)))
    completion = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "Whole answer"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 2)


async def test_fake_sends_usage_only_when_asked(client: openai.AsyncOpenAI,
                                                openai_fake: FakeUpstream) -> None:
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Hi"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_fake_records_each_turn(provider: Provider, openai_fake: FakeUpstream) -> None:
    first = chat_request(("user", "Hi"))
    answer = "".join([e.text async for e in provider.stream(first) if isinstance(e, TextDelta)])
    second = chat_request(("user", "Hi"), ("assistant", answer), ("user", "And?"))
    [_ async for _ in provider.stream(second)]
    assert [len(body["messages"]) for body in openai_fake.bodies] == [1, 3]
    assert openai_fake.bodies[1]["messages"][1] == {"role": "assistant", "content": answer}
