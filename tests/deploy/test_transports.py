"""The same chat scenarios against ``chatgate serve`` (aiohttp) and ``chatgate serve --lambda``
(the Lambda handlers behind the API Gateway emulator): one contract, two transports."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.auth import issue_token
from gateway.runtime import RUNTIME_KEY
from tests.deploy.conftest import Gateway, gateways, open_transport, serving
from tests.gateway_harness import TEST_SECRET, make_config, token


@pytest.fixture(params=["aiohttp", "lambda"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str,
                  http: aiohttp.ClientSession) -> AsyncIterator[Gateway]:
    mode: str = request.param
    async with serving(open_transport(mode, make_config(tmp_path, redis_url))) as server:
        runtime = server.app[RUNTIME_KEY] if mode == "aiohttp" else gateways(server)[0].runtime
        yield Gateway(mode, server, runtime, http)


async def test_turn_streams_and_second_turn_carries_context(gateway: Gateway) -> None:
    async with gateway.connect(header=False) as sock:
        first = await sock.chat("My name is Ada", frame_id="t1", max_tokens=64)
        conversation_id = first.last["conversation_id"]
        second = await sock.chat("What is my name?", frame_id="t2",
                                 conversation_id=conversation_id)
    for result in (first, second):
        assert result.kinds[0] == "start" and result.kinds[-1] == "done"
        assert set(result.kinds[1:-1]) == {"delta"}
    start = first.frames[0]
    assert (start["provider"], start["model"], start["cached"]) == ("mock", "gpt-4o-mini", False)
    assert re.fullmatch(r"[0-9a-f]{32}", conversation_id)
    assert first.text.startswith("[2 messages, turn 1]")
    assert second.text.startswith("[4 messages, turn 2]")
    assert second.last["conversation_id"] == conversation_id
    assert second.last["usage"]["prompt_tokens"] > first.last["usage"]["prompt_tokens"]
    usage = first.last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert first.last["finish_reason"] == "stop" and first.last["cost_usd"] > 0


async def test_bad_frames_get_invalid_request_and_socket_survives(gateway: Gateway) -> None:
    async with gateway.connect() as sock:
        await sock.ws.send_str("{not json")
        assert (await sock.receive())["code"] == "invalid_request"
        await sock.ws.send_str('{"type":"chat","id":"x","content":""}')
        error = await sock.receive()
        assert (error["type"], error["code"], error["id"]) == ("error", "invalid_request", "x")
        await sock.ws.send_str('{"type":"teleport","id":"z"}')
        assert (await sock.receive())["code"] == "invalid_request"
        await sock.ws.send_bytes(b'{"type":"ping"}')
        assert (await sock.receive())["code"] == "invalid_request"
        await sock.ws.send_str(orjson.dumps({"type": "chat", "id": "big",
                                             "content": "a" * 70_000}).decode())
        assert (await sock.receive())["code"] == "invalid_request"
        await sock.send({"type": "cancel", "id": "nothing-in-flight"})  # ignored
        await sock.send({"type": "ping"})
        assert await sock.receive() == {"type": "pong"}
        assert (await sock.chat("still here")).kinds[-1] == "done"


BAD_TOKENS = [
    None,
    "not-a-jwt",
    token(user="a", ttl_s=-10),
    token(plan="platinum"),
    issue_token(TEST_SECRET[::-1], user="alice", brand="growain"),
]


async def test_bad_tokens_are_refused_with_401_and_health_answers(gateway: Gateway) -> None:
    for bad in BAD_TOKENS:
        params = {"token": bad} if bad else {}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await gateway.http.ws_connect(gateway.url(), params=params)
        assert info.value.status == 401, bad
    async with gateway.http.get(gateway.url("/healthz")) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"
