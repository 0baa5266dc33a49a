"""One contract, every real provider: the official SDK against its wire-format fake."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config import ProviderOptions
from providers.base import Finish, Provider, ProviderEvent, TextDelta, UsageReport
from providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
)
from tests.fakes.providers import chat_request, events_until, provider_for
from tests.fakes.upstream import (
    FakeUpstream,
    Reply,
    end_after,
    error_after,
    fail_after,
    hang_before_first_token,
    ok,
    slow,
    status,
)

REQUEST = chat_request(("system", "Be brief."), ("user", "Hi"))


@pytest.fixture
async def provider(kind: str, fake: FakeUpstream) -> AsyncIterator[Provider]:
    made = provider_for(kind, fake)
    yield made
    await made.aclose()


async def collect(provider: Provider) -> list[ProviderEvent]:
    return [event async for event in provider.stream(REQUEST)]


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def is_coarsening(pieces: list[str], sent: list[str]) -> bool:
    """``pieces`` are ``sent``, in order, with runs of consecutive ones joined."""
    at = 0
    for piece in pieces:
        joined = ""
        while at < len(sent) and len(joined) < len(piece):
            joined += sent[at]
            at += 1
        if joined != piece:
            return False
    return at == len(sent)


def test_is_coarsening() -> None:
    assert is_coarsening(["a", "b", "c"], ["a", "b", "c"])
    assert is_coarsening(["ab", "c"], ["a", "b", "c"])
    assert not is_coarsening(["a", "c"], ["a", "b", "c"])
    assert not is_coarsening(["ba", "c"], ["a", "b", "c"])
    assert not is_coarsening(["a", "b"], ["a", "b", "c"])


def usage_of(events: list[ProviderEvent]) -> tuple[int | None, int | None]:
    prompt = completion = None
    for event in events:
        if isinstance(event, UsageReport):
            prompt = event.prompt_tokens if event.prompt_tokens is not None else prompt
            completion = (event.completion_tokens if event.completion_tokens is not None
                          else completion)
    return prompt, completion


async def test_streams_text_usage_and_finish(provider: Provider, fake: FakeUpstream) -> None:
    fake.script(ok("Hel", "lo", " there", usage=(21, 3)))
    events = await collect(provider)
    assert text_of(events) == "Hello there"
    # in order; pieces that arrived in one read may come joined (providers.base.merge_text)
    assert is_coarsening([e.text for e in events if isinstance(e, TextDelta)],
                         ["Hel", "lo", " there"])
    assert usage_of(events) == (21, 3)
    assert [e for e in events if isinstance(e, Finish)] == [Finish("stop")]
    assert fake.request_count == 1


async def test_max_tokens_finish_is_length(provider: Provider, fake: FakeUpstream) -> None:
    fake.script(ok("cut", finish="length"))
    events = await collect(provider)
    assert [e for e in events if isinstance(e, Finish)] == [Finish("length")]


async def test_unicode_split_across_writes_survives(provider: Provider, fake: FakeUpstream
                                                    ) -> None:
    fake.script(ok("Grüße ", "— 你好 ", "🙂"))
    assert text_of(await collect(provider)) == "Grüße — 你好 🙂"


@pytest.mark.parametrize(("code", "expected"), [
    (429, ProviderRateLimited), (500, ProviderOverloaded), (503, ProviderOverloaded),
    (400, ProviderBadRequest), (401, ProviderAuthError), (403, ProviderAuthError),
])
async def test_http_errors_map_by_status(provider: Provider, fake: FakeUpstream, code: int,
                                         expected: type[ProviderError]) -> None:
    fake.script(status(code))
    with pytest.raises(expected) as caught:
        await collect(provider)
    assert caught.value.provider == provider.name
    assert caught.value.retryable == (code in (429, 500, 503))


@pytest.mark.parametrize("broken", [fail_after(2), end_after(2)], ids=["cut", "ended"])
async def test_a_stream_broken_mid_answer_is_a_connection_error(
        provider: Provider, fake: FakeUpstream, broken: Reply) -> None:
    """The connection cut, or the body ended cleanly before the answer did (no finish, no
    closing events): a broken stream, not a complete answer to record and cache."""
    fake.script(broken)
    seen = await events_until(provider, REQUEST, ProviderConnectionError)
    assert text_of(seen) == "part0 part1 "


async def test_in_stream_error_is_retryable(provider: Provider, fake: FakeUpstream) -> None:
    fake.script(error_after(1))
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.retryable


async def test_unreachable_server_is_a_connection_error(kind: str, fake: FakeUpstream) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    provider = provider_for(kind, fake, ProviderOptions(connect_timeout_s=1.0))
    try:
        with pytest.raises(ProviderConnectionError):
            await collect(provider)
    finally:
        await provider.aclose()


async def test_closing_the_stream_closes_the_connection(provider: Provider,
                                                        fake: FakeUpstream) -> None:
    fake.script(slow(*[f"w{i} " for i in range(50)], delay_s=0.05))
    stream = provider.stream(REQUEST)
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    closed_at = time.monotonic()
    await stream.aclose()
    seen_at = await fake.wait_for_disconnect(within_s=1.0)
    assert seen_at - closed_at < 1.0


async def test_cancelling_the_consumer_closes_the_connection(provider: Provider,
                                                             fake: FakeUpstream) -> None:
    fake.script(slow(*[f"w{i} " for i in range(50)], delay_s=0.05))
    first = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(REQUEST):
            if isinstance(event, TextDelta):
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_for_disconnect(within_s=1.0)


async def test_cancel_before_any_response_closes_the_connection(provider: Provider,
                                                                fake: FakeUpstream) -> None:
    fake.script(hang_before_first_token(headers=False))

    async def consume() -> None:
        async for _ in provider.stream(REQUEST):
            pass

    task = asyncio.create_task(consume())
    await fake.wait_for_requests(1, within_s=2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_for_disconnect(within_s=1.0)


async def test_a_stall_mid_answer_times_out_on_the_backstop(kind: str,
                                                            fake: FakeUpstream) -> None:
    """Alone (no router's clocks), a provider whose upstream goes silent after the first
    delta fails with a timeout on its read backstop, before the next delta would have
    come: it does not wait on."""
    fake.script(slow("a", "b", delay_s=1.5))
    provider = provider_for(kind, fake, ProviderOptions(first_token_timeout_s=0.2,
                                                        chunk_timeout_s=0.2))
    started = time.monotonic()
    seen = await events_until(provider, REQUEST, ProviderTimeout)
    assert text_of(seen) == "a"  # the second delta, 1.5 s on, never came
    assert time.monotonic() - started >= 0.2
