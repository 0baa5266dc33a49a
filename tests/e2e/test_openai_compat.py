"""The official openai SDK against a running gateway: /v1/chat/completions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.gateway_harness import make_config, running_gateway, token


def _client(server: TestServer, jwt: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key=jwt or token(),
                              max_retries=0)


async def test_streaming_with_usage_chunk(gateway: TestServer) -> None:
    client = _client(gateway)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True,
        stream_options={"include_usage": True}, max_tokens=64)
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    await client.close()
    assert text.startswith("[2 messages, turn 1]")
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_non_streaming_and_conversation_header_carries_context(
        gateway: TestServer) -> None:
    client = _client(gateway)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "My name is Ada"}])
    first = raw.parse()
    conversation_id = raw.headers["x-conversation-id"]
    assert first.choices[0].message.content.startswith("[2 messages, turn 1]")
    assert first.usage is not None and first.usage.prompt_tokens > 0
    second = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is my name?"}],
        extra_headers={"X-Conversation-Id": conversation_id})
    await client.close()
    # The provider received system + first user + first answer + new user message.
    assert second.choices[0].message.content.startswith("[4 messages, turn 2]")


async def test_client_history_is_context_for_a_new_conversation(gateway: TestServer) -> None:
    client = _client(gateway)
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"}])
    await client.close()
    # brand system prompt (with the client's appended) + 2 history + the new message
    assert reply.choices[0].message.content.startswith("[4 messages, turn 2]")


async def test_sync_client_works(gateway: TestServer) -> None:
    def call() -> str:
        with openai.OpenAI(base_url=str(gateway.make_url("/v1")), api_key=token(),
                           max_retries=0) as client:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi from sync"}])
            return reply.choices[0].message.content or ""

    assert (await asyncio.to_thread(call)).startswith("[2 messages, turn 1]")


async def test_budget_refusal_is_the_sdks_rate_limit_error(tmp_path: Path,
                                                            redis_url: str) -> None:
    config = make_config(tmp_path, redis_url, plans={"free": {"tokens_per_day": 40}})
    async with running_gateway(config) as server:
        client = _client(server)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                max_tokens=100)
        await client.close()
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "budget_exceeded"
    assert body["scope"] == "user_day"


async def test_bad_token_and_bad_body(gateway: TestServer) -> None:
    client = _client(gateway, jwt="not-a-token")
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    await client.close()
    client = _client(gateway)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "assistant", "content": "no user"}])
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"X-Conversation-Id": "0" * 32})
    await client.close()
