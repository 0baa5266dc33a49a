"""The connection registry's scripts, on a real Redis and on the embedded one."""

from __future__ import annotations

from deploy.connections import (
    ChatAdmission,
    ConnectionRegistry,
    chats_key,
    decode_principal,
    principal_key,
)
from gateway.auth import Principal
from memory.redis_client import RedisClient

ALICE = Principal(user_id="alice", brand="growain", plan="free", roles=frozenset({"admin"}))


def registry(redis: RedisClient, now: list[float]) -> ConnectionRegistry:
    return ConnectionRegistry(redis, connection_ttl_s=60, chat_lease_s=10,
                              clock=lambda: now[0])


async def test_principal_round_trip_and_forget(any_redis: RedisClient) -> None:
    reg = registry(any_redis, [1000.0])
    assert await reg.principal("c") is None
    await reg.register("c", ALICE)
    assert await reg.principal("c") == ALICE
    assert 0 < await any_redis.ttl(principal_key("c")) <= 60
    await reg.begin_chat("c", "x", max_chats=4)
    await reg.forget("c")
    assert await any_redis.exists(principal_key("c"), chats_key("c")) == 0


async def test_duplicates_and_the_per_socket_limit(any_redis: RedisClient) -> None:
    reg = registry(any_redis, [1000.0])
    assert await reg.begin_chat("c", "a", max_chats=2) is ChatAdmission.STARTED
    assert await reg.begin_chat("c", "a", max_chats=2) is ChatAdmission.DUPLICATE
    assert await reg.begin_chat("c", "b", max_chats=2) is ChatAdmission.STARTED
    assert await reg.begin_chat("c", "z", max_chats=2) is ChatAdmission.TOO_MANY
    assert await reg.begin_chat("other", "z", max_chats=2) is ChatAdmission.STARTED
    await reg.end_chat("c", "a")
    assert await reg.begin_chat("c", "z", max_chats=2) is ChatAdmission.STARTED


async def test_a_chat_left_by_a_crashed_invocation_expires(any_redis: RedisClient) -> None:
    now = [1000.0]
    reg = registry(any_redis, now)
    await reg.begin_chat("c", "a", max_chats=1)
    now[0] += 11  # past the 10 s lease
    assert not await reg.cancel_chat("c", "a")
    assert await reg.begin_chat("c", "b", max_chats=1) is ChatAdmission.STARTED
    assert await reg.begin_chat("c", "a", max_chats=2) is ChatAdmission.STARTED


async def test_cancel_marks_only_chats_in_flight(any_redis: RedisClient) -> None:
    reg = registry(any_redis, [1000.0])
    assert not await reg.cancel_chat("c", "a")
    assert await any_redis.exists(chats_key("c")) == 0  # nothing left behind
    await reg.begin_chat("c", "a", max_chats=4)
    assert not await reg.is_cancelled("c", "a")
    assert await reg.cancel_chat("c", "a")
    assert await reg.is_cancelled("c", "a")
    assert await reg.cancel_chat("c", "a")  # idempotent
    await reg.end_chat("c", "a")
    assert not await reg.is_cancelled("c", "a")


def test_undecodable_principal_is_none() -> None:
    assert decode_principal(b"{") is None
    assert decode_principal(b'{"sub":"a"}') is None
