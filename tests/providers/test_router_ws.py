"""The router's scenario matrix through the WebSocket: real gateway, real providers, fakes.

The gateway runs from a config whose brand chain is primary → fallback, both pointed at
wire fakes (Bedrock with dummy AWS credentials from the environment). Frames are what a
client sees; the fakes say what reached the providers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from memory.tokens import TokenCounter
from tests.e2e.wsclient import ChatResult, ChatSocket
from tests.fakes.providers import FAKES, TEST_API_KEY, TEST_REGION, base_url_for
from tests.fakes.upstream import (
    FakeUpstream,
    cut_after_finish,
    fail_after,
    hang_before_first_token,
    ok,
    serve,
    slow,
    status,
)
from tests.gateway_harness import make_config, running_gateway, token

PAIRS = [("openai", "bedrock"), ("bedrock", "anthropic")]
WS_OPTIONS: dict[str, Any] = {
    "connect_timeout_s": 1.0, "first_token_timeout_s": 5.0, "chunk_timeout_s": 2.0,
    "max_retries": 2, "backoff_base_s": 0.001, "backoff_cap_s": 0.01,
    "max_retry_after_s": 1.0, "circuit_failure_threshold": 3, "circuit_cooldown_s": 30.0,
}


@dataclass
class Gateway:
    url: Any
    primary: FakeUpstream
    secondary: FakeUpstream
    kinds: tuple[str, str]
    http: aiohttp.ClientSession

    @asynccontextmanager
    async def socket(self) -> AsyncIterator[ChatSocket]:
        async with self.http.ws_connect(self.url, params={"token": token()}) as ws:
            yield ChatSocket(ws)

    async def chat(self, content: str = "Hi", **extra: Any) -> ChatResult:
        async with self.socket() as sock:
            return await sock.chat(content, max_tokens=64, **extra)


StartGateway = Callable[..., AbstractAsyncContextManager[Gateway]]


def overrides_for(kinds: tuple[str, str], fakes: tuple[FakeUpstream, FakeUpstream],
                  options: dict[str, Any]) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for kind, fake in zip(kinds, fakes, strict=True):
        credentials = {"region": TEST_REGION} if kind == "bedrock" else {"api_key": TEST_API_KEY}
        providers[kind] = {"base_url": base_url_for(kind, fake), **credentials, **options}
    chain = [f"{kind}:{kind}-model" for kind in kinds]
    return {"providers": providers,
            "brands": {"growain": {"providers": chain, "cache": "off"}}}


@pytest.fixture(params=PAIRS, ids=["->".join(p) for p in PAIRS])
def start_gateway(request: pytest.FixtureRequest, tmp_path: Path,
                  aws_test_env: dict[str, str]) -> StartGateway:
    kinds: tuple[str, str] = request.param
    redis_url = f"memory://router-ws-{uuid.uuid4().hex}"  # budgets are not under test here

    @asynccontextmanager
    async def start(primary_options: dict[str, Any] | None = None, **options: Any
                    ) -> AsyncIterator[Gateway]:
        """``options`` apply to both providers, ``primary_options`` to the first only."""
        async with AsyncExitStack() as stack:
            primary = await stack.enter_async_context(serve(FAKES[kinds[0]]()))
            secondary = await stack.enter_async_context(serve(FAKES[kinds[1]]()))
            overrides = overrides_for(kinds, (primary, secondary), {**WS_OPTIONS, **options})
            overrides["providers"][kinds[0]].update(primary_options or {})
            server = await stack.enter_async_context(
                running_gateway(make_config(tmp_path, redis_url, **overrides)))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            yield Gateway(server.make_url("/v1/ws"), primary, secondary, kinds, http)

    return start


def start_of(result: ChatResult) -> dict[str, Any]:
    assert result.kinds[0] == "start", result.frames
    return result.frames[0]


async def test_rate_limited_then_success(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        gw.primary.script(status(429, retry_after=0.05))
        result = await gw.chat()
    assert start_of(result)["provider"] == gw.kinds[0]
    assert start_of(result)["model"] == f"{gw.kinds[0]}-model"
    assert result.text == "Hello, world!"
    assert result.last["type"] == "done" and result.last["finish_reason"] == "stop"
    assert result.last["usage"]["completion_tokens"] == 4  # as the provider reported
    assert (gw.primary.request_count, gw.secondary.request_count) == (2, 0)


async def test_server_error_falls_back(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        gw.primary.default = status(500)
        result = await gw.chat()
    assert start_of(result)["provider"] == gw.kinds[1]
    assert result.text == "Hello, world!" and result.last["type"] == "done"
    assert (gw.primary.request_count, gw.secondary.request_count) == (3, 1)


async def test_hang_before_first_token_falls_back(start_gateway: StartGateway) -> None:
    async with start_gateway({"first_token_timeout_s": 0.5, "max_retries": 0}) as gw:
        gw.primary.script(hang_before_first_token())
        result = await gw.chat()
        await gw.primary.wait_for_disconnect(within_s=1.0)
    assert start_of(result)["provider"] == gw.kinds[1]
    assert result.last["type"] == "done"


async def test_failure_after_three_deltas_is_an_error_without_fallback(
        start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        gw.primary.script(fail_after(3))
        result = await gw.chat()
    assert result.kinds == ["start", "delta", "delta", "delta", "error"]
    assert result.text == "part0 part1 part2 "
    assert result.last["code"] == "provider_error"
    assert (gw.primary.request_count, gw.secondary.request_count) == (1, 0)


async def test_a_cut_after_the_finish_is_a_complete_turn(start_gateway: StartGateway) -> None:
    """The connection lost after the stop reason (before the usage some wires send after
    it): the client gets its ``done``, and the answer is history the next turn sends."""
    async with start_gateway() as gw, gw.socket() as sock:
        # Reported, the usage would say 3 output tokens (one per delta); counted, it is 5.
        # (Both primaries here, OpenAI and Bedrock, report it after the finish; Anthropic's
        # comes with its finish and would stand.)
        gw.primary.script(cut_after_finish("Paris ", "is ", "the capital."))
        first = await sock.chat("Capital of France?", frame_id="t1", max_tokens=64)
        await sock.chat("And of Spain?", frame_id="t2", max_tokens=64,
                        conversation_id=first.last["conversation_id"])
    assert first.kinds[-1] == "done", first.frames
    assert first.last["finish_reason"] == "stop"
    assert first.text == "Paris is the capital."
    assert first.last["usage"]["completion_tokens"] == TokenCounter().count(first.text)
    assert "Paris is the capital." in str(gw.primary.requests[1].body)
    assert gw.secondary.request_count == 0


async def test_circuit_opens_then_probes_after_cooldown(start_gateway: StartGateway) -> None:
    cooldown_s = 0.3
    async with start_gateway(max_retries=0, circuit_failure_threshold=2,
                             circuit_cooldown_s=cooldown_s) as gw:
        gw.primary.default = status(503)
        providers = [start_of(await gw.chat())["provider"] for _ in range(3)]
        assert providers == [gw.kinds[1]] * 3
        assert gw.primary.request_count == 2  # the third turn skipped it
        gw.primary.default = ok("back")
        await asyncio.sleep(cooldown_s)  # the breaker's clock is the real one here
        probe = await gw.chat()
    assert start_of(probe)["provider"] == gw.kinds[0] and probe.text == "back"
    assert gw.primary.request_count == 3


async def test_cancel_frame_closes_the_upstream(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw, gw.socket() as sock:
        gw.primary.script(slow(*[f"w{i} " for i in range(100)], delay_s=0.05))
        await sock.send({"type": "chat", "id": "c1", "content": "Hi", "max_tokens": 64})
        assert (await sock.receive())["type"] == "start"
        assert (await sock.receive())["type"] == "delta"
        await sock.send({"type": "cancel", "id": "c1"})
        rest = await sock.collect("c1")
        await gw.primary.wait_for_disconnect(within_s=1.0)
    assert rest.last["type"] == "done" and rest.last["finish_reason"] == "cancelled"


async def test_closing_the_socket_closes_the_upstream(start_gateway: StartGateway) -> None:
    async with start_gateway() as gw:
        gw.primary.script(slow(*[f"w{i} " for i in range(100)], delay_s=0.05))
        async with gw.socket() as sock:
            await sock.send({"type": "chat", "id": "c1", "content": "Hi", "max_tokens": 64})
            assert (await sock.receive())["type"] == "start"
            assert (await sock.receive())["type"] == "delta"
        await gw.primary.wait_for_disconnect(within_s=1.0)


async def test_second_turn_reaches_the_provider_with_the_first(start_gateway: StartGateway
                                                              ) -> None:
    async with start_gateway() as gw, gw.socket() as sock:
        first = await sock.chat("My name is Ada", frame_id="t1", max_tokens=64)
        await sock.chat("What is my name?", frame_id="t2", max_tokens=64,
                        conversation_id=first.last["conversation_id"])
    sent = str(gw.primary.requests[1].body)
    assert "My name is Ada" in sent and first.text in sent and "What is my name?" in sent
    assert "What is my name?" not in str(gw.primary.requests[0].body)
