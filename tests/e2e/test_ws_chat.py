"""A chat turn end to end: real aiohttp server, real WebSocket client, real Redis."""

from __future__ import annotations

import re

import aiohttp
import orjson
import pytest
import structlog
from aiohttp.test_utils import TestServer

from memory.tokens import TokenCounter
from tests.e2e.conftest import ConnectFn
from tests.e2e.wsclient import ChatSocket
from tests.fakes.fixtures import openai_fake  # noqa: F401
from tests.fakes.upstream import FakeUpstream
from tests.gateway_harness import TEST_SECRET, token


async def test_turn_streams_start_deltas_done(connect: ConnectFn) -> None:
    async with connect() as sock:
        result = await sock.chat("Hello there", max_tokens=64)
    kinds = result.kinds
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("delta") >= 3 and set(kinds[1:-1]) == {"delta"}
    start, done = result.frames[0], result.last
    assert start["provider"] == "mock" and start["model"] == "gpt-4o-mini"
    assert start["cached"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", start["conversation_id"])
    assert done["conversation_id"] == start["conversation_id"]
    usage = done["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert done["finish_reason"] == "stop"
    assert done["cost_usd"] > 0  # gpt-4o-mini has a price in the sample
    assert {"first_token", "stream", "total"} <= set(done["timings_ms"])


async def test_second_turn_reaches_provider_with_first_turn(connect: ConnectFn) -> None:
    async with connect() as sock:
        first = await sock.chat("My name is Ada", frame_id="t1")
        conversation_id = first.last["conversation_id"]
        second = await sock.chat("What is my name?", frame_id="t2",
                                 conversation_id=conversation_id)
    # The mock provider opens its answer with what it received: system + user on turn 1;
    # system + user + assistant + user on turn 2.
    assert first.text.startswith("[2 messages, turn 1]")
    assert second.text.startswith("[4 messages, turn 2]")
    assert second.last["conversation_id"] == conversation_id
    assert second.last["usage"]["prompt_tokens"] > first.last["usage"]["prompt_tokens"]


async def test_unknown_and_foreign_conversation_ids_are_not_found(connect: ConnectFn) -> None:
    async with connect(user="alice") as alice:
        owned = (await alice.chat("hi")).last["conversation_id"]
        unknown = await alice.chat("hi", frame_id="u", conversation_id="f" * 32)
        garbage = await alice.chat("hi", frame_id="g", conversation_id="../../etc")
    async with connect(user="mallory") as mallory:
        foreign = await mallory.chat("hi", frame_id="m", conversation_id=owned)
    for result in (unknown, garbage, foreign):
        assert result.kinds == ["error"] and result.last["code"] == "not_found"


async def test_bad_frames_get_one_error_each_and_socket_survives(connect: ConnectFn) -> None:
    async with connect() as sock:
        await sock.ws.send_str("{not json")
        assert (await sock.receive())["code"] == "invalid_request"
        await sock.ws.send_str('{"type":"chat","id":"x","content":""}')
        error = await sock.receive()
        assert (error["code"], error["id"]) == ("invalid_request", "x")
        await sock.ws.send_str('{"type":"chat","id":"y","content":"hi","max_tokens":0}')
        assert (await sock.receive())["id"] == "y"
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


async def test_several_chats_in_flight_on_one_socket(connect: ConnectFn) -> None:
    async with connect() as sock:
        ids = [f"c{i}" for i in range(5)]
        for frame_id in ids:
            await sock.send({"type": "chat", "id": frame_id, "content": f"question {frame_id}"})
        frames: dict[str, list[str]] = {i: [] for i in ids}
        finished: set[str] = set()
        while finished != set(ids):
            frame = await sock.receive()
            frames[frame["id"]].append(frame["type"])
            if frame["type"] in ("done", "error"):
                finished.add(frame["id"])
    for kinds in frames.values():
        assert kinds[0] == "start" and kinds[-1] == "done" and "delta" in kinds


async def test_duplicate_id_in_flight_is_refused(tmp_path, redis_url: str) -> None:
    from tests.gateway_harness import make_config, running_gateway

    config = make_config(tmp_path, redis_url, mock={"token_delay_ms": 20})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock = ChatSocket(ws)
        await sock.send({"type": "chat", "id": "same", "content": "one"})
        await sock.send({"type": "chat", "id": "same", "content": "two"})
        seen = [await sock.receive() for _ in range(2)]
        errors = [f for f in seen if f["type"] == "error"]
        assert len(errors) == 1 and "already in flight" in errors[0]["message"]
        assert errors[0]["id"] is None and errors[0]["duplicate_id"] == "same"
        assert (await sock.collect("same")).last["type"] == "done"  # the first one goes on


async def test_cancel_ends_turn_with_cancelled_done(tmp_path, redis_url: str) -> None:
    from tests.gateway_harness import make_config, running_gateway, runtime_of

    config = make_config(tmp_path, redis_url,
                         mock={"token_delay_ms": 50, "answer_tokens": 200})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock = ChatSocket(ws)
        await sock.send({"type": "chat", "id": "c1", "content": "tell me a long story"})
        frames = [await sock.receive(), await sock.receive()]  # start + first delta
        await sock.send({"type": "cancel", "id": "c1"})
        result = await sock.collect("c1")
        done = result.last
        assert [f["type"] for f in frames] == ["start", "delta"]
        assert done["type"] == "done" and done["finish_reason"] == "cancelled"
        generated = len(frames) - 1 + result.kinds.count("delta")
        assert generated < 200
        assert done["usage"]["completion_tokens"] > 0
        usage = await runtime_of(server).ledger.usage("growain", "alice")
        assert usage.user_day.reserved == 0
        assert usage.user_day.used == done["usage"]["total_tokens"]


async def test_token_in_query_parameter(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(
            gateway.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock = ChatSocket(ws)
        await sock.send({"type": "ping"})
        assert await sock.receive() == {"type": "pong"}


@pytest.mark.parametrize("bad", [
    None,
    "not-a-jwt",
    token(user="a", ttl_s=-10),
    token(brand="nosuchbrand"),
    token(plan="platinum"),
])
async def test_unauthenticated_upgrade_is_refused_with_401(gateway: TestServer,
                                                            bad: str | None) -> None:
    headers = {"Authorization": f"Bearer {bad}"} if bad else {}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(gateway.make_url("/v1/ws"), headers=headers)
    assert info.value.status == 401


async def test_forged_token_is_refused(gateway: TestServer) -> None:
    from gateway.auth import issue_token

    forged = issue_token(TEST_SECRET[::-1], user="alice", brand="growain")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(gateway.make_url("/v1/ws"), params={"token": forged})
    assert info.value.status == 401


async def test_budget_refusal_before_provider_call(tmp_path, redis_url: str) -> None:
    from tests.gateway_harness import make_config, running_gateway

    config = make_config(tmp_path, redis_url, plans={"free": {"tokens_per_day": 60}})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        result = await ChatSocket(ws).chat("hello", max_tokens=500)
    # 60 tokens a day: the conversation cap leaves room, the day does not: refused.
    assert result.kinds == ["error"]
    assert result.last["code"] == "budget_exceeded" and result.last["scope"] == "user_day"


async def test_health_and_metrics(gateway: TestServer, connect: ConnectFn) -> None:
    async with connect() as sock:
        await sock.chat("hi")
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.make_url("/healthz")) as r:
            assert r.status == 200
        async with http.get(gateway.make_url("/readyz")) as r:
            assert (await r.json())["redis"] == "ok"
        async with http.get(gateway.make_url("/metrics")) as r:
            body = await r.text()
    assert 'chatgate_turns_total{brand="growain",outcome="stop"} 1.0' in body


async def test_turn_log_line_has_figures_and_no_content(connect: ConnectFn) -> None:
    secret_words = "my-secret-diary-entry"
    with structlog.testing.capture_logs() as logs:
        async with connect() as sock:
            await sock.chat(secret_words)
    turns = [entry for entry in logs if entry["event"] == "turn"]
    assert len(turns) == 1
    line = turns[0]
    assert secret_words not in repr(logs)
    for key in ("brand", "user", "conversation_id", "model", "prompt_tokens",
                "completion_tokens", "timings_ms", "outcome"):
        assert key in line
    assert line["outcome"] == "stop" and line["completion_tokens"] > 0


async def test_second_turn_reaches_openai_with_first_turn(tmp_path, redis_url: str,
                                                          openai_fake: FakeUpstream,  # noqa: F811
                                                          ) -> None:
    """Asserted on the provider side: what the fake OpenAI server received."""
    from tests.gateway_harness import make_config, openai_brands, running_gateway

    config = make_config(tmp_path, redis_url, **openai_brands(openai_fake.url, "growain"))
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock = ChatSocket(ws)
        first = await sock.chat("My name is Ada", frame_id="t1")
        await sock.chat("What is my name?", frame_id="t2",
                        conversation_id=first.last["conversation_id"])
    assert first.frames[0]["provider"] == "openai"
    second_request = openai_fake.bodies[1]
    assert [(m["role"], m["content"]) for m in second_request["messages"]] == [
        ("system", "You are Growain's marketing assistant."),
        ("user", "My name is Ada"),
        ("assistant", first.text),
        ("user", "What is my name?"),
    ]
    assert second_request["stream"] is True
    assert second_request["stream_options"] == {"include_usage": True}


async def test_cancel_before_first_token_sends_start_then_done_and_stores_nothing(
        tmp_path, redis_url: str) -> None:
    from tests.gateway_harness import make_config, running_gateway, runtime_of

    config = make_config(tmp_path, redis_url, mock={"first_token_delay_ms": 5000})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock = ChatSocket(ws)
        await sock.send({"type": "chat", "id": "c1", "content": "hello"})
        await sock.send({"type": "cancel", "id": "c1"})
        result = await sock.collect("c1")
        runtime = runtime_of(server)
        usage = await runtime.ledger.usage("growain", "alice")
        hot = await runtime.hot.load("growain", result.frames[0]["conversation_id"])
    assert result.kinds == ["start", "done"]
    assert result.last["finish_reason"] == "cancelled"
    assert hot is None  # an empty answer is not history
    # Billed for the prompt the provider received, nothing generated; nothing held back.
    assert result.last["usage"]["completion_tokens"] == 0
    assert usage.user_day.used == result.last["usage"]["prompt_tokens"] > 0
    assert usage.user_day.reserved == 0


async def test_a_provider_that_never_answers_bills_nothing(
        tmp_path, redis_url: str) -> None:
    from tests.gateway_harness import make_config, openai_brands, running_gateway, runtime_of
    from tests.redis_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    overrides = openai_brands(dead, "growain")
    overrides["providers"]["openai"]["max_retries"] = 0
    config = make_config(tmp_path, redis_url, **overrides)
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        result = await ChatSocket(ws).chat("hello")
        usage = await runtime_of(server).ledger.usage("growain", "alice")
    assert result.kinds == ["error"] and result.last["code"] == "provider_error"
    assert "conversation_id" not in result.last  # the new conversation was never stored
    assert (usage.user_day.used, usage.user_day.reserved) == (0, 0)


async def test_the_conversation_cap_cuts_max_tokens_then_refuses(
        tmp_path, redis_url: str, openai_fake: FakeUpstream) -> None:  # noqa: F811
    """Asserted on the provider side: each turn asks for at most what the conversation has
    left, and a spent conversation is refused by name before any provider call."""
    from tests.gateway_harness import make_config, openai_brands, running_gateway

    overrides = openai_brands(openai_fake.url, "growain")
    overrides["brands"]["growain"]["tokens_per_conversation"] = 200
    config = make_config(tmp_path, redis_url, **overrides)
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock = ChatSocket(ws)
        asked, conversation_id, spent, last = [], None, 0, None
        for i in range(40):
            last = await sock.chat(f"Question {i}", frame_id=f"t{i}", max_tokens=300,
                                   conversation_id=conversation_id)
            if last.last["type"] != "done":
                break
            conversation_id = last.last["conversation_id"]
            usage = last.last["usage"]
            asked.append(openai_fake.bodies[-1]["max_tokens"])
            spent += usage["prompt_tokens"] + usage["completion_tokens"]
    assert last is not None and last.last["code"] == "budget_exceeded"
    assert last.last["scope"] == "conversation"
    assert len(openai_fake.bodies) == len(asked)  # the refused turn never reached it
    assert asked[0] < 200  # already cut: 200 tokens less the first prompt
    assert asked == sorted(asked, reverse=True) and asked[-1] < asked[0]
    assert spent <= 200 + asked[-1]  # the last admitted turn fitted what was left


async def test_a_stored_answer_keeps_the_providers_token_count(
        tmp_path, redis_url: str, openai_fake: FakeUpstream) -> None:  # noqa: F811
    """A complete answer is stored with the completion tokens the provider reported, not
    encoded again (here 37, where our own count of the text is 4)."""
    from tests.fakes.upstream import Reply
    from tests.gateway_harness import make_config, openai_brands, running_gateway, runtime_of

    openai_fake.script(Reply(usage=(11, 37)))
    config = make_config(tmp_path, redis_url, **openai_brands(openai_fake.url, "growain"))
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        whole = await ChatSocket(ws).chat("Hello there", frame_id="w")
        stored = await runtime_of(server).hot.load("growain", whole.last["conversation_id"])
    assert stored is not None
    question, answer = stored.messages
    assert answer.content == Reply().text and TokenCounter().count(answer.content) == 4
    assert answer.tokens == 37
    assert question.tokens == TokenCounter().count("Hello there")
