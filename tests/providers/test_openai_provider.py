"""OpenAI: the provider's wire details, and the fake driven by the SDK without the provider."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx2
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai import _base_client

from gateway.config import ProviderOptions
from providers.base import Finish, Provider, TextDelta, UsageReport
from providers.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
)
from providers.openai_provider import (
    OpenAIProvider,
    _SDKClient,
    build_openai_params,
    map_openai_errors,
)
from tests.fakes.providers import TEST_API_KEY, chat_request, provider_for
from tests.fakes.upstream import FakeUpstream, hang_before_first_token, ok, sse, status
from tests.redis_server import free_port

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


async def test_each_request_has_its_own_body(provider: Provider,
                                            openai_fake: FakeUpstream) -> None:
    """Requests are copies of one template: nothing of one turn's request stays for the
    next (the SDK's options are copied per request, never the template changed)."""
    assert isinstance(provider, OpenAIProvider)
    template = provider._completions.model_dump()
    shorter = replace(CONVERSATION, max_tokens=7, request_id="turn-2",
                      messages=CONVERSATION.messages[1:])
    for request in (replace(CONVERSATION, request_id="turn-1"), shorter, CONVERSATION):
        [_ async for _ in provider.stream(request)]
    assert provider._completions.model_dump() == template  # copied, never changed
    calls = openai_fake.requests
    assert [c.body["max_tokens"] for c in calls] == [42, 7, 42]
    assert [len(c.body["messages"]) for c in calls] == [2, 1, 2]
    assert calls[0].body == calls[2].body


async def test_no_platform_telemetry_headers(provider: Provider,
                                             openai_fake: FakeUpstream) -> None:
    """The SDK's X-Stainless-* platform headers (the gateway host's OS, architecture and
    runtime) are not sent; its per-request headers still are."""
    [_ async for _ in provider.stream(CONVERSATION)]
    [call] = openai_fake.requests
    names = {name.lower() for name in call.headers}
    platform = {"x-stainless-lang", "x-stainless-os", "x-stainless-arch",
                "x-stainless-runtime", "x-stainless-runtime-version",
                "x-stainless-package-version", "x-stainless-async"}
    assert not names & platform
    assert call.headers["x-stainless-retry-count"] == "0"
    assert call.headers["content-type"] == "application/json"
    assert call.headers["user-agent"].startswith("AsyncOpenAI/Python")


async def test_headers_come_from_one_template_per_client_setting(
        provider: Provider, openai_fake: FakeUpstream) -> None:
    """Every request carries the headers the SDK built for the first (a copy: changing one
    request's headers changes no other); a new API key makes a new set, and a request
    with headers of its own is built by the SDK itself."""
    assert isinstance(provider, OpenAIProvider)
    sdk = provider._client
    [_ async for _ in provider.stream(CONVERSATION)]
    options = provider._completions.model_copy(update={"content": b"{}"})
    sdk._build_headers(options)["X-Changed"] = "by one request"
    [_ async for _ in provider.stream(replace(CONVERSATION, request_id="turn-2"))]
    first, second = openai_fake.requests
    assert second.headers == {**first.headers, "content-length": second.headers[
        "content-length"]}
    assert "x-changed" not in second.headers

    sdk.api_key = "sk-rotated"
    [_ async for _ in provider.stream(CONVERSATION)]
    assert openai_fake.requests[-1].headers["authorization"] == "Bearer sk-rotated"
    assert {key[1] for key in sdk._header_templates} == {"sk-rotated"}  # the old one: gone

    own = options.model_copy(update={"headers": {"X-Request-Own": "yes"}})
    built = sdk._build_headers(own)
    assert built["x-request-own"] == "yes"
    assert built["authorization"] == "Bearer sk-rotated"
    assert "x-request-own" not in sdk._build_headers(options)


async def test_retry_after_is_read(provider: Provider, openai_fake: FakeUpstream) -> None:
    openai_fake.script(status(429, retry_after=0.75))
    with pytest.raises(ProviderRateLimited) as caught:
        [_ async for _ in provider.stream(CONVERSATION)]
    assert caught.value.retry_after_s == 0.75
    assert openai_fake.request_count == 1


def _options(provider: OpenAIProvider, **update: Any) -> Any:
    return provider._completions.model_copy(update={
        "content": orjson.dumps(build_openai_params(CONVERSATION)),
        "idempotency_key": "turn-1", **update})


def _by_request(sdk: openai.AsyncOpenAI) -> Callable[[Any], Awaitable[httpx2.Response]]:
    return lambda options: sdk.request(httpx2.Response, options, stream=True)


async def _outcome(send: Callable[[Any], Awaitable[httpx2.Response]], options: Any) -> Any:
    """What a send answers: the status and body, or its error as ours (the provider's
    mapping) with the SDK's status error details where there is one."""
    try:
        with map_openai_errors():
            response = await send(options)
    except ProviderError as exc:
        cause = exc.__cause__
        sdk_error = ((type(cause), cause.status_code, str(cause), cause.body)
                     if isinstance(cause, openai.APIStatusError) else None)
        return type(exc), getattr(exc, "retry_after_s", None), sdk_error
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


async def _each_way(make: Callable[[], Provider]) -> list[Any]:
    """One send's outcome through the provider's direct send, then through the SDK's
    ``request``, each on a provider of its own (a client keeps the headers it built once)."""
    outcomes = []
    for direct in (True, False):
        provider = make()
        assert isinstance(provider, OpenAIProvider)
        sdk = provider._client
        try:
            outcomes.append(await _outcome(sdk.stream_response if direct else _by_request(sdk),
                                           _options(provider)))
        finally:
            await provider.aclose()
    return outcomes


@pytest.mark.parametrize("answer", [ok("Hi", " there"), status(429, retry_after=0.5),
                                    status(400, error_code="invalid_request_error"),
                                    status(401), status(500)],
                         ids=["200", "429", "400", "401", "500"])
async def test_the_direct_send_is_the_sdks_request(
        openai_fake: FakeUpstream, answer: Any) -> None:
    """The provider's send (the SDK's request built and sent, without ``request``'s loop)
    puts on the wire what the SDK's ``request`` does, and answers what it answers: the
    streamed body, or the same typed status error (class, status, message, body)."""
    openai_fake.script(answer, answer)
    direct, by_request = await _each_way(lambda: provider_for("openai", openai_fake))
    assert direct == by_request
    sent_direct, sent_by_request = openai_fake.requests
    assert sent_direct.headers == sent_by_request.headers
    assert sent_direct.body == sent_by_request.body


@pytest.mark.parametrize("failure", ["refused", "timeout"])
async def test_the_direct_send_fails_as_the_sdks_request_does(
        openai_fake: FakeUpstream, failure: str) -> None:
    """A refused connection and a server that sends no headers within the client's
    timeout are the same errors of ours either way (the SDK would wrap httpx2's errors
    in its own; the provider's mapping takes both to the same)."""
    options = ProviderOptions(first_token_timeout_s=0.2, chunk_timeout_s=0.2)
    refused = replace(options, base_url=f"http://127.0.0.1:{free_port()}/v1")
    hang = hang_before_first_token(headers=False)
    openai_fake.script(hang, hang)
    outcomes = await _each_way(
        lambda: OpenAIProvider(refused, api_key=TEST_API_KEY) if failure == "refused"
        else provider_for("openai", openai_fake, options))
    expected = ProviderConnectionError if failure == "refused" else ProviderTimeout
    assert outcomes == [(expected, None, None)] * 2


async def test_the_provider_sends_without_the_sdks_request_loop(
        provider: Provider, openai_fake: FakeUpstream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider's client (a plain key, no retries) never goes through ``request``."""
    async def not_expected(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the SDK's request() was used")

    monkeypatch.setattr(openai.AsyncOpenAI, "request", not_expected)
    events = [e async for e in provider.stream(CONVERSATION)]
    assert any(isinstance(e, Finish) for e in events)
    assert openai_fake.request_count == 1


async def test_the_platform_is_never_looked_up_on_the_event_loop(
        provider: Provider, openai_fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's platform lookup (a blocking read of the OS release) is for headers a
    provider leaves out; ``request`` would make it in a thread, the provider's send
    makes it nowhere, and never on the event loop's thread."""
    on_the_loop = []
    lookup = _base_client.get_platform

    def recorded() -> Any:
        on_the_loop.append(threading.current_thread() is threading.main_thread())
        return lookup()

    monkeypatch.setattr(_base_client, "get_platform", recorded)
    _base_client.platform_headers.cache_clear()  # as in a new process
    try:
        [_ async for _ in provider.stream(CONVERSATION)]
    finally:
        _base_client.platform_headers.cache_clear()
    assert True not in on_the_loop


async def _rotating_key() -> str:
    return "sk-from-a-key-provider"


@pytest.mark.parametrize("case", ["key provider", "client retries", "retries set later",
                                  "request retries", "redirects", "request headers"])
async def test_anything_the_request_loop_serves_goes_the_sdks_whole_way(
        provider: Provider, openai_fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch,
        case: str) -> None:
    """A client or a request that ``request``'s loop does something for is sent by it: a
    key provider (its key fetched per request), retries (the client's, set when it is
    made or later, or the request's), a redirect setting, headers of the request's own."""
    assert isinstance(provider, OpenAIProvider)
    sdk: _SDKClient = provider._client
    options = _options(provider)
    if case == "key provider":
        sdk = sdk.with_options(api_key=_rotating_key)
    elif case == "client retries":
        sdk = sdk.with_options(max_retries=1)
    elif case == "retries set later":
        await (await sdk.stream_response(_options(provider))).aclose()  # decided, then...
        sdk.max_retries = 1
    elif case == "request retries":
        options = _options(provider, max_retries=1)
    elif case == "redirects":
        options = _options(provider, follow_redirects=False)
    else:
        options = _options(provider, headers={"X-Request-Own": "yes"})
    used = []
    request = openai.AsyncOpenAI.request

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        used.append(case)
        return await request(self, *args, **kwargs)

    monkeypatch.setattr(openai.AsyncOpenAI, "request", counted)
    openai_fake.script(status(500, retry_after=0.01), ok("Hi"))
    outcome = await _outcome(sdk.stream_response, options)
    assert used == [case]
    retried = case in ("client retries", "retries set later", "request retries")
    assert outcome[0] == (200 if retried else ProviderOverloaded)
    last = openai_fake.requests[-1].headers
    if case == "key provider":
        assert last["authorization"] == "Bearer sk-from-a-key-provider"
    if case == "request headers":
        assert last["x-request-own"] == "yes"


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


# --- what one network read carries ------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _delta(text: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


_CLOSING = (sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            + sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
            + b"data: [DONE]\n\n")


@pytest.fixture
async def served() -> AsyncIterator[Callable[[Handler], Awaitable[Provider]]]:
    """An OpenAI provider pointed at a local server running ``handler``."""
    servers: list[TestServer] = []
    providers: list[Provider] = []

    async def start(handler: Handler) -> Provider:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        url = str(server.make_url("/v1"))
        provider = OpenAIProvider(ProviderOptions(base_url=url), api_key=TEST_API_KEY)
        providers.append(provider)
        return provider

    yield start
    for provider in providers:
        await provider.aclose()
    for server in servers:
        await server.close()


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def _writes(body: bytes) -> Handler:
    """A handler that sends ``body`` in one write, then ends the response."""
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await _open(request)
        await response.write(body)
        await response.write_eof()
        return response

    return handler


async def test_pieces_that_arrive_together_leave_as_one_delta(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    provider = await served(_writes(_delta("Hel") + _delta("lo") + _delta(" there")
                                    + _CLOSING))
    events = [event async for event in provider.stream(CONVERSATION)]
    assert events == [TextDelta("Hello there"), Finish("stop"),
                      UsageReport(prompt_tokens=5, completion_tokens=3)]


async def test_pieces_read_apart_stay_apart(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    proceed = asyncio.Event()

    async def apart(request: web.Request) -> web.StreamResponse:
        response = await _open(request)
        await response.write(_delta("Hel"))
        await proceed.wait()  # the test has the first piece before the second is sent
        await response.write(_delta("lo") + _CLOSING)
        await response.write_eof()
        return response

    provider = await served(apart)
    texts: list[str] = []
    async for event in provider.stream(CONVERSATION):
        if isinstance(event, TextDelta):
            texts.append(event.text)
            proceed.set()
    assert texts == ["Hel", "lo"]


async def test_a_malformed_event_is_a_broken_stream_and_an_empty_one_nothing(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    provider = await served(_writes(_delta("Hel") + b"data:\n\n" + _delta("lo")
                                    + sse({"choices": ["not an object"]})))
    texts: list[str] = []
    with pytest.raises(ProviderConnectionError) as caught:
        async for event in provider.stream(CONVERSATION):
            assert isinstance(event, TextDelta)
            texts.append(event.text)
    assert texts == ["Hello"]
    assert isinstance(caught.value.__cause__, AttributeError)  # what the mapping met, kept


async def test_an_answer_may_end_after_its_finish_without_done(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    """Some OpenAI-compatible servers end the body after the finish chunk, without
    ``[DONE]``: a complete answer (a body ending before any finish is not: the contract
    tests)."""
    provider = await served(_writes(_delta("Hi") + _CLOSING.removesuffix(b"data: [DONE]\n\n")))
    events = [event async for event in provider.stream(CONVERSATION)]
    assert events == [TextDelta("Hi"), Finish("stop"),
                      UsageReport(prompt_tokens=5, completion_tokens=3)]


async def test_an_answered_body_ending_later_keeps_its_connection(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    """The body's terminator comes after ``[DONE]`` (a later read): the answer is over at
    ``[DONE]``, and the connection, its end read in the background, serves the next one."""
    peers: list[Any] = []
    hold = asyncio.Event()

    async def late_end(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        response = await _open(request)
        await response.write(_delta("Hi") + _CLOSING)
        await hold.wait()  # the client has its answer before the body ends
        await response.write_eof()
        return response

    provider = await served(late_end)
    assert isinstance(provider, OpenAIProvider)
    transport = provider._client._client._direct  # type: ignore[attr-defined]
    first = [e async for e in provider.stream(CONVERSATION)]
    assert first[0] == TextDelta("Hi")
    assert len(transport.finishing) == 1  # the body's end is awaited, not given up
    hold.set()
    await asyncio.wait(transport.finishing, timeout=5)
    second = [e async for e in provider.stream(CONVERSATION)]
    assert second == first
    assert len(peers) == 2 and peers[0] == peers[1]  # one connection, reused


async def test_closing_the_provider_ends_the_reads_of_answered_bodies(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    """A body whose end never comes: closing the provider stops its read and closes its
    connection, nothing left pending."""
    async def never_ends(request: web.Request) -> web.StreamResponse:
        response = await _open(request)
        await response.write(_delta("Hi") + _CLOSING)
        await asyncio.Event().wait()  # until the client goes away
        return response

    provider = await served(never_ends)
    assert isinstance(provider, OpenAIProvider)
    transport = provider._client._client._direct  # type: ignore[attr-defined]
    [_ async for _ in provider.stream(CONVERSATION)]
    [reading] = transport.finishing
    await provider.aclose()
    assert reading.done() and not transport.finishing


async def test_text_before_an_error_in_the_same_read_still_goes_out(
        served: Callable[[Handler], Awaitable[Provider]]) -> None:
    error: dict[str, Any] = {"error": {"type": "server_error", "message": "boom"}}

    provider = await served(_writes(_delta("Hel") + _delta("lo") + sse(error)))
    texts: list[str] = []
    with pytest.raises(ProviderOverloaded):
        async for event in provider.stream(CONVERSATION):
            assert isinstance(event, TextDelta)
            texts.append(event.text)
    assert texts == ["Hello"]
