"""The Lambda handlers behind the API Gateway emulator: a real WebSocket client, real HTTP
to the Management API (aioboto3), a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from deploy.local import MAX_MESSAGE_BYTES
from tests.deploy.conftest import GatewayFactory, gateways
from tests.e2e.wsclient import ChatSocket

SLOW = {"mock": {"token_delay_ms": 20, "answer_tokens": 200}}


async def eventually(check: Callable[[], Awaitable[bool]], *, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def test_chat_streams_start_deltas_done(lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw, gw.connect() as sock:
        result = await sock.chat("Hello there", max_tokens=64)
        stats = gateways(gw.server)[0].delivery
    kinds = result.kinds
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    assert result.text.startswith("[2 messages, turn 1]")
    assert len(result.text.split()) == 4 + 24  # the header's four words, then 24 tokens
    done = result.last
    assert done["finish_reason"] == "stop" and done["usage"]["completion_tokens"] > 0
    # 24 small deltas, one burst: coalesced into far fewer posts than frames.
    assert kinds.count("delta") < 24
    assert stats.posts == len(kinds) and stats.gone == 0


async def test_deltas_flush_on_time_when_tokens_trickle(lambda_gateway: GatewayFactory) -> None:
    trickle = {"mock": {"token_delay_ms": 40, "answer_tokens": 6}}
    async with lambda_gateway(**trickle) as gw, gw.connect() as sock:
        result = await sock.chat("slowly")
    # 40 ms between tokens and a 20 ms bound: each token leaves on its own.
    assert result.kinds.count("delta") >= 6
    assert len(result.text.split()) == 4 + 6


async def test_several_chats_in_flight(lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(mock={"token_delay_ms": 5}) as gw, gw.connect() as sock:
        ids = [f"c{i}" for i in range(5)]
        for chat_id in ids:
            await sock.send({"type": "chat", "id": chat_id, "content": f"question {chat_id}"})
        frames: dict[str, list[str]] = {i: [] for i in ids}
        while any(not k or k[-1] not in ("done", "error") for k in frames.values()):
            frame = await sock.receive()
            frames[frame["id"]].append(frame["type"])
    for kinds in frames.values():
        assert kinds[0] == "start" and kinds[-1] == "done" and "delta" in kinds


async def test_second_turn_on_another_instance_carries_context(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(instances=2) as gw, gw.connect() as sock:
        first = await sock.chat("My name is Ada", frame_id="t1")
        second = await sock.chat("And mine?", frame_id="t2",
                                 conversation_id=first.last["conversation_id"])
    assert second.text.startswith("[4 messages, turn 2]")
    served = [g.delivery.posts for g in gateways(gw.server)]
    assert all(posts > 0 for posts in served), served


async def test_disconnect_mid_stream_is_gone_and_settles(lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(**SLOW) as gw:
        async with gw.connect() as sock:
            await sock.send({"type": "chat", "id": "c1", "content": "a long story please"})
            assert (await sock.receive())["type"] == "start"
            assert (await sock.receive())["type"] == "delta"
        delivery = gateways(gw.server)[0].delivery

        async def gone_seen() -> bool:
            return delivery.gone >= 1

        async def settled() -> bool:
            usage = await gw.runtime.ledger.usage("growain", "alice")
            return usage.user_day.reserved == 0 and usage.user_day.used > 0

        await eventually(gone_seen)
        await eventually(settled)
        usage = await gw.runtime.ledger.usage("growain", "alice")
    # Billed for the prompt and what was generated before the client left, not the 200.
    assert usage.user_day.used < 200 + 100


async def test_cancel_arrives_in_another_invocation_and_instance(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(instances=2, **SLOW) as gw, gw.connect(header=False) as sock:
        await sock.send({"type": "chat", "id": "c1", "content": "tell me a long story"})
        frames = [await sock.receive(), await sock.receive()]
        await sock.send({"type": "cancel", "id": "c1"})
        rest = await sock.collect("c1")
        done = rest.last

        async def settled() -> bool:  # the turn settles right after posting ``done``
            usage = await gw.runtime.ledger.usage("growain", "alice")
            return (usage.user_day.reserved == 0
                    and usage.user_day.used == done["usage"]["total_tokens"])

        await eventually(settled)
    assert [f["type"] for f in frames] == ["start", "delta"]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert 0 < done["usage"]["completion_tokens"] < 200


async def test_cancel_for_a_chat_not_in_flight_is_ignored(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw, gw.connect() as sock:
        await sock.send({"type": "cancel", "id": "never-started"})
        result = await sock.chat("hello", frame_id="never-started")
    assert result.last["finish_reason"] == "stop"


async def test_duplicate_chat_id_across_invocations_is_refused(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(instances=2, **SLOW) as gw, gw.connect() as sock:
        await sock.send({"type": "chat", "id": "same", "content": "one"})
        assert (await sock.receive())["type"] == "start"
        await sock.send({"type": "chat", "id": "same", "content": "two"})
        while (frame := await sock.receive())["type"] != "error":
            assert frame["type"] == "delta"
        assert "already in flight" in frame["message"]
        await sock.send({"type": "cancel", "id": "same"})
        assert (await sock.collect("same")).last["finish_reason"] == "cancelled"


async def test_too_many_chats_per_socket_is_rate_limited(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(gateway={"max_chats_per_socket": 1}, **SLOW) as gw, \
            gw.connect() as sock:
        await sock.send({"type": "chat", "id": "a", "content": "one"})
        assert (await sock.receive())["type"] == "start"
        await sock.send({"type": "chat", "id": "b", "content": "two"})
        while (frame := await sock.receive())["id"] != "b":
            pass
        assert frame["code"] == "rate_limited" and frame["retry_after_ms"] == 100
        await sock.send({"type": "cancel", "id": "a"})
        assert (await sock.collect("a")).last["finish_reason"] == "cancelled"


async def test_frames_beyond_api_gateway_message_size_close_the_socket(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw, gw.connect() as sock:
        await sock.ws.send_str("x" * (MAX_MESSAGE_BYTES + 1))
        message = await sock.ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


@pytest.mark.parametrize("claims", [{"brand": "nosuchbrand"}, {"ttl_s": -10}])
async def test_bad_tokens_are_refused_at_connect(lambda_gateway: GatewayFactory,
                                                 claims: dict[str, object]) -> None:
    from tests.gateway_harness import token

    async with lambda_gateway() as gw:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await gw.http.ws_connect(gw.url(), params={"token": token(**claims)})
        with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
            await gw.http.ws_connect(gw.url())
    assert info.value.status == 401 and missing.value.status == 401


async def test_disconnect_forgets_the_connection(lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw:
        redis = gw.runtime.redis
        async with gw.connect() as sock:
            await sock.send({"type": "ping"})
            assert await sock.receive() == {"type": "pong"}
            keys = await redis.keys("chatgate:conn:*")
            assert len(keys) == 1

        async def forgotten() -> bool:
            return not await redis.keys("chatgate:conn:*")

        await eventually(forgotten)


async def test_health_and_ready(lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw:
        async with gw.http.get(gw.url("/healthz")) as r:
            assert (await r.json())["transport"] == "lambda"
        async with gw.http.get(gw.url("/readyz")) as r:
            assert (await r.json())["redis"] == "ok"


async def test_socket_keeps_working_while_a_turn_streams(lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway(**SLOW) as gw, gw.connect() as sock:
        await sock.send({"type": "chat", "id": "c1", "content": "long"})
        await sock.send({"type": "ping"})
        seen = []
        while (frame := await sock.receive()) != {"type": "pong"}:
            seen.append(frame["type"])
        await sock.send({"type": "cancel", "id": "c1"})
        assert (await ChatSocket(sock.ws).collect("c1")).last["type"] == "done"


async def test_management_api_answers_like_aws(lambda_gateway: GatewayFactory) -> None:
    import aioboto3

    session = aioboto3.Session(aws_access_key_id="k", aws_secret_access_key="s",
                               region_name="us-east-1")
    async with lambda_gateway() as gw, session.client(
            "apigatewaymanagementapi", endpoint_url=gw.url("/local")) as client:
        with pytest.raises(client.exceptions.GoneException):
            await client.post_to_connection(ConnectionId="unknown=", Data=b"{}")
        async with gw.connect() as sock:
            (key,) = await gw.runtime.redis.keys("chatgate:conn:*:principal")
            connection_id = key.decode().split("{")[1].split("}")[0]
            info = await client.get_connection(ConnectionId=connection_id)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            await client.post_to_connection(ConnectionId=connection_id, Data=b'{"type":"pong"}')
            assert await sock.receive() == {"type": "pong"}
            await client.delete_connection(ConnectionId=connection_id)
            closing = await sock.ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        with pytest.raises(client.exceptions.GoneException):
            await client.get_connection(ConnectionId=connection_id)
        async with gw.http.post(gw.url(f"/local/@connections/{connection_id}"),
                                data=b"{}") as unsigned:
            assert unsigned.status == 403
            assert unsigned.headers["x-amzn-ErrorType"] == "ForbiddenException"


async def test_turns_run_in_asynchronous_invocations(lambda_gateway: GatewayFactory) -> None:
    from deploy.dispatch import TaskDispatcher

    async with lambda_gateway(instances=2, async_turns=True, **SLOW) as gw, \
            gw.connect() as sock:
        first = await sock.chat("quick one", frame_id="a", max_tokens=8)
        await sock.send({"type": "chat", "id": "b", "content": "a long story"})
        assert (await sock.receive())["type"] == "start"
        await sock.send({"type": "chat", "id": "b", "content": "again"})
        while (frame := await sock.receive())["type"] != "error":
            assert frame["type"] == "delta"
        assert "already in flight" in frame["message"]
        await sock.send({"type": "cancel", "id": "b"})
        cancelled = await sock.collect("b")
        dispatchers = {id(g.dispatcher): g.dispatcher for g in gateways(gw.server)}
    assert first.last["finish_reason"] == "length"
    assert cancelled.last["finish_reason"] == "cancelled"
    (dispatcher,) = dispatchers.values()  # one emulated Lambda service for both instances
    assert isinstance(dispatcher, TaskDispatcher) and dispatcher.dispatched == 3


async def test_a_connection_without_its_record_is_told_and_closed(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw, gw.connect() as sock:
        for key in await gw.runtime.redis.keys("chatgate:conn:*"):
            await gw.runtime.redis.delete(key)  # as if the record had expired
        await sock.send({"type": "ping"})
        error = await sock.receive()
        closing = await sock.ws.receive(timeout=5)
    assert (error["type"], error["code"]) == ("error", "unauthorized")
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_the_scheduled_persister_drains_turns_into_history(
        lambda_gateway: GatewayFactory) -> None:
    async with lambda_gateway() as gw:  # no background persister, as on Lambda
        async with gw.connect() as sock:
            conversation_id = (await sock.chat("remember this")).last["conversation_id"]
        history = gw.runtime.history

        async def drained() -> bool:  # the outbox write precedes ``done``; poll anyway
            answer = await gateways(gw.server)[0].drain_outbox()
            assert answer["statusCode"] == 200
            meta = await history.get_conversation("growain", "alice", conversation_id)
            return meta is not None

        await eventually(drained)
