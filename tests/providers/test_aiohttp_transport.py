"""The SDKs' HTTP transport (providers/aiohttp_transport.py), through the openai SDK and
against real local aiohttp servers: bodies read both ways, compression, error mapping,
connection reuse."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from providers.aiohttp_transport import (
    BODY_EXTENSION,
    StallWatchdog,
    body_chunks,
    sdk_http_client,
)
from providers.errors import ProviderConnectionError, ProviderTimeout
from providers.transport import map_transport_errors
from tests.fakes.upstream import FakeUpstream, ok, sse

EVENTS = b"".join(sse({"n": i, "text": "é" * i}) for i in range(40)) + b"data: [DONE]\n\n"
TIMEOUT = httpx2.Timeout(5.0, connect=2.0)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """One local server; notes the TCP connection each request arrived on."""

    def __init__(self, handler: Handler) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", handler)
        self.peers: list[object] = []
        self.url = ""

    def seen(self, request: web.Request) -> None:
        self.peers.append(request.transport.get_extra_info("peername")
                          if request.transport else None)


Serve = Callable[[Handler], Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        test_server = TestServer(server.app, host="127.0.0.1")
        await test_server.start_server()
        servers.append(test_server)
        server.url = str(test_server.make_url("")).rstrip("/")
        return server

    yield start
    for test_server in servers:
        await test_server.close()


async def _stream_events(request: web.Request, *, compress: bool = False) -> web.StreamResponse:
    body = gzip.compress(EVENTS) if compress else EVENTS
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    if compress:
        response.headers["Content-Encoding"] = "gzip"
    await response.prepare(request)
    for start in range(0, len(body), 97):  # split anywhere, even inside a UTF-8 sequence
        await response.write(body[start:start + 97])
    await response.write_eof()
    return response


def writes_then_stalls(*script: bytes | float) -> tuple[Handler, asyncio.Event]:
    """A handler that streams ``script`` (bytes are written, a float is a pause in
    seconds), then sends nothing more until the returned event is set."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for step in script:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await response.write(step)
        await release.wait()
        return response

    return handler, release


async def _post(client: httpx2.AsyncClient, url: str) -> httpx2.Response:
    request = client.build_request("POST", f"{url}/v1/chat/completions", content=b"{}")
    return await client.send(request, stream=True)


async def test_body_read_straight_from_aiohttp_matches_httpx2s(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        server.seen(request)
        return await _stream_events(request)

    server = await serve(handler)
    async with sdk_http_client(TIMEOUT) as client:
        direct = await _post(client, server.url)
        assert BODY_EXTENSION in direct.extensions
        straight = b"".join([chunk async for chunk in body_chunks(direct)])
        await direct.aclose()
        layered = await _post(client, server.url)
        through_httpx2 = await layered.aread()
    assert straight == through_httpx2 == EVENTS
    assert server.peers[0] == server.peers[1]  # the fully read body gave its connection back


@pytest.mark.parametrize("read", ["straight", "httpx2"])
async def test_compressed_body_arrives_decoded_either_way(serve: Serve, read: str) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return await _stream_events(request, compress=True)

    server = await serve(handler)
    async with sdk_http_client(TIMEOUT) as client:
        response = await _post(client, server.url)
        assert "content-encoding" not in response.headers
        if read == "straight":
            body = b"".join([chunk async for chunk in body_chunks(response)])
        else:
            body = await response.aread()
        await response.aclose()
    assert body == EVENTS
    assert "gzip" in seen[0]  # aiohttp advertises what it decodes


async def test_abandoned_stream_closes_its_connection(serve: Serve) -> None:
    finish = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        server.seen(request)
        if len(server.peers) > 1:
            return web.Response(text="second")
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await finish.wait()
        return response

    server = await serve(handler)
    async with sdk_http_client(TIMEOUT) as client:
        first = await _post(client, server.url)
        async for _ in body_chunks(first):
            break
        await first.aclose()
        second = await _post(client, server.url)
        assert await second.aread() == b"second"
    finish.set()
    assert server.peers[0] != server.peers[1]  # a half-read body is never reused


async def test_refused_connection_is_a_connection_error_through_the_sdk() -> None:
    with socket.socket() as bound:  # bound, never listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        sdk = openai.AsyncOpenAI(api_key="k", base_url=f"http://127.0.0.1:{port}/v1",
                                 max_retries=0, http_client=sdk_http_client(TIMEOUT))
        try:
            with pytest.raises(openai.APIConnectionError) as caught:
                await sdk.post("/chat/completions", content=b"{}", cast_to=httpx2.Response)
            assert not isinstance(caught.value, openai.APITimeoutError)
        finally:
            await sdk.close()


async def test_stalled_body_read_straight_times_out_as_a_provider_timeout(serve: Serve) -> None:
    handler, release = writes_then_stalls(b"data: one\n\n")  # the read timeout must fire
    server = await serve(handler)
    async with sdk_http_client(httpx2.Timeout(0.3, connect=2.0)) as client:
        response = await _post(client, server.url)
        with pytest.raises(ProviderTimeout), map_transport_errors("openai"):
            async for _ in body_chunks(response):
                pass
        await response.aclose()
    release.set()


async def test_a_steady_body_outlasts_the_read_timeout_and_a_stall_after_it_times_out(
        serve: Serve) -> None:
    """Each wait is bounded, not the body: 20 chunks 50 ms apart (a second in all) pass a
    0.5 s read timeout, and the stall after them fails within two read timeouts (the
    watchdog's precision: it checks once per timeout)."""
    handler, release = writes_then_stalls(
        *[item for index in range(20) for item in (b"data: %d\n\n" % index, 0.05)])
    server = await serve(handler)
    received: list[bytes] = []
    async with sdk_http_client(httpx2.Timeout(0.5, connect=2.0)) as client:
        response = await _post(client, server.url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ProviderTimeout), map_transport_errors("openai"):
            async for chunk in body_chunks(response):
                received.append(chunk)
        waited = loop.time() - started
        await response.aclose()
    release.set()
    assert b"".join(received) == b"".join(b"data: %d\n\n" % i for i in range(20))
    assert 1.0 + 0.5 - 0.1 <= waited <= 1.0 + 2 * 0.5 + 1.0  # (slack for a busy machine)


async def test_a_reader_slower_than_the_upstream_is_not_timed_out(serve: Serve) -> None:
    """Bytes received but not yet read are progress the reader owes, not a stall: a reader
    that pauses for several read timeouts still gets everything, and only the upstream's
    own silence afterwards ends the body."""
    handler, release = writes_then_stalls(  # the rest arrives while the reader is away
        b"data: 0\n\n", 0.1, *[b"data: %d\n\n" % index for index in range(1, 5)])
    server = await serve(handler)
    received: list[bytes] = []
    async with sdk_http_client(httpx2.Timeout(0.2, connect=2.0)) as client:
        response = await _post(client, server.url)
        chunks = body_chunks(response)
        with pytest.raises(ProviderTimeout), map_transport_errors("openai"):
            async for chunk in chunks:
                received.append(chunk)
                if len(received) == 1:
                    await asyncio.sleep(0.8)  # a slow reader: four read timeouts
        await response.aclose()
    release.set()
    assert b"".join(received) == b"".join(b"data: %d\n\n" % i for i in range(5))
    assert isinstance(chunks, StallWatchdog) and not chunks.armed


async def test_a_closed_or_finished_body_leaves_no_timer(serve: Serve) -> None:
    server = await serve(_stream_events)
    async with sdk_http_client(TIMEOUT) as client:
        finished = await _post(client, server.url)
        read_to_the_end = body_chunks(finished)
        assert b"".join([chunk async for chunk in read_to_the_end]) == EVENTS
        abandoned = await _post(client, server.url)
        left_midway = body_chunks(abandoned)
        await anext(left_midway)
        assert isinstance(left_midway, StallWatchdog) and left_midway.armed
        await abandoned.aclose()
        await finished.aclose()
    assert isinstance(read_to_the_end, StallWatchdog) and not read_to_the_end.armed
    assert not left_midway.armed


async def test_a_response_sent_through_httpx2s_own_path_is_read_straight_too(
        serve: Serve) -> None:
    """An explicit ``auth`` sends through httpx2's own client code, which wraps the
    response's stream; the body is still found, read straight and watched."""
    server = await serve(_stream_events)
    async with sdk_http_client(TIMEOUT) as client:
        request = client.build_request("POST", f"{server.url}/v1/chat/completions",
                                       content=b"{}")
        response = await client.send(request, stream=True, auth=httpx2.BasicAuth("u", "p"))
        chunks = body_chunks(response)
        assert isinstance(chunks, StallWatchdog)
        assert b"".join([chunk async for chunk in chunks]) == EVENTS
        await response.aclose()


async def test_a_reader_that_never_comes_back_stops_being_watched(serve: Serve) -> None:
    # The second write comes well inside the read timeout, and is never read.
    handler, release = writes_then_stalls(b"data: 0\n\n", 0.02, b"data: 1\n\n")
    server = await serve(handler)
    async with sdk_http_client(httpx2.Timeout(0.1, connect=2.0)) as client:
        response = await _post(client, server.url)
        chunks = body_chunks(response)
        assert await anext(chunks) == b"data: 0\n\n"
        assert isinstance(chunks, StallWatchdog)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        # Ten checks, 0.1 s apart; the watchdog has no event to wait on (it would cost
        # every body one), so its public state is polled.
        while chunks.armed and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert not chunks.armed
        assert await anext(chunks) == b"data: 1\n\n"  # the bytes were kept, not failed
        await response.aclose()
    release.set()


async def test_body_cut_mid_stream_is_a_provider_connection_error(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        assert request.transport is not None
        request.transport.close()  # chunked body, never terminated
        return response

    server = await serve(handler)
    async with sdk_http_client(TIMEOUT) as client:
        response = await _post(client, server.url)
        with pytest.raises(ProviderConnectionError), map_transport_errors("openai"):
            async for _ in body_chunks(response):
                pass
        await response.aclose()



async def test_the_environments_proxy_is_used(serve: Serve,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    async def proxy(request: web.Request) -> web.Response:  # an HTTP proxy gets absolute URLs
        asked.append(str(request.url))
        return web.Response(text="via proxy")

    server = await serve(proxy)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    async with sdk_http_client(TIMEOUT) as client:
        response = await client.get("http://provider.invalid/v1/models")
    assert response.text == "via proxy"
    assert asked == ["http://provider.invalid/v1/models"]
    monkeypatch.setenv("NO_PROXY", "provider.invalid")
    async with sdk_http_client(TIMEOUT) as client:
        with pytest.raises(httpx2.ConnectError):  # bypassed: straight to a name that fails
            await client.get("http://provider.invalid/v1/models")


async def test_a_providers_cookie_is_not_carried_to_the_next_request(serve: Serve) -> None:
    cookies: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "tenant-a")
        return response

    server = await serve(handler)
    by_name = server.url.replace("127.0.0.1", "localhost")  # cookies for a host name are kept
    async with sdk_http_client(TIMEOUT) as client:  # by a jar (those for an IP address not)
        for _ in range(2):
            assert (await client.get(f"{by_name}/v1/models")).text == "ok"
    assert cookies == [None, None]  # no jar: one tenant's request never carries another's


async def test_a_whole_answer_through_the_sdk(openai_fake: FakeUpstream) -> None:
    sdk = openai.AsyncOpenAI(api_key="k", base_url=f"{openai_fake.url}/v1", max_retries=0,
                             http_client=sdk_http_client(TIMEOUT))
    try:
        openai_fake.script(ok("Whole", " answer", usage=(9, 2)))
        completion = await sdk.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Hi"}])
    finally:
        await sdk.close()
    assert completion.choices[0].message.content == "Whole answer"


async def test_an_sdk_request_is_built_as_httpx2_builds_it() -> None:
    """SDKClient.build_request's shortcut against httpx2's own build_request: the same
    request but for the client-level default headers (the SDK sets its own)."""
    headers = [("Authorization", "Bearer k"), ("Content-Type", "application/json"),
               ("User-Agent", "AsyncOpenAI/Python"), ("X-Stainless-Lang", "python")]
    call = {"method": "POST", "url": "http://provider.invalid/v1/chat/completions?x=1",
            "content": b'{"stream":true}', "headers": headers,
            "timeout": httpx2.Timeout(7.0, connect=2.0), "files": None}
    async with sdk_http_client(TIMEOUT) as ours, httpx2.AsyncClient(headers={}) as httpx2s:
        built = [ours.build_request(**call) for _ in range(2)]  # the second: a known URL
        reference = httpx2s.build_request(**call)
    for request in built:
        assert (request.method, request.url, request.content) == (
            reference.method, reference.url, reference.content)
        assert request.extensions == reference.extensions
        expected = [(k, v) for k, v in reference.headers.multi_items()
                    if k not in ("accept", "accept-encoding", "connection")]
        assert request.headers.multi_items() == expected


async def test_other_requests_go_through_httpx2s_own_build(serve: Serve) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.query_string}|{await request.text()}")

    server = await serve(echo)
    async with sdk_http_client(TIMEOUT) as client:
        response = await client.post(f"{server.url}/form", params={"a": "1"},
                                     data={"b": "2"})
    assert response.text == "a=1|b=2"
