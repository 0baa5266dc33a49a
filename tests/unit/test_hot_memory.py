"""Hot memory in Redis (real server and embedded memory://): roundtrip, cap, TTL, forget,
and key-safe user ids."""

from __future__ import annotations

import pytest

from memory.hot import HotMemory, is_conversation_id, new_conversation_id, user_key
from memory.records import StoredMessage
from memory.redis_client import RedisClient

BRAND = "growain"


def message(index: int) -> StoredMessage:
    return StoredMessage(role="user" if index % 2 == 0 else "assistant",
                         content=f"message {index} ✓", created_at=1000.0 + index, tokens=index)


@pytest.fixture
def hot(any_redis: RedisClient) -> HotMemory:
    return HotMemory(any_redis, ttl_s=300, max_messages=4, clock=lambda: 1234.5)


async def test_store_then_load_roundtrip(hot: HotMemory) -> None:
    conversation = new_conversation_id()
    stored = [message(0), message(1)]
    await hot.store(BRAND, conversation, "alice", stored, summary="earlier: greetings")
    loaded = await hot.load(BRAND, conversation)
    assert loaded is not None
    assert loaded.owner == "alice"
    assert loaded.summary == "earlier: greetings"
    assert loaded.messages == stored


async def test_store_appends_in_order(hot: HotMemory) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0), message(1)])
    await hot.store(BRAND, conversation, "alice", [message(2)])
    loaded = await hot.load(BRAND, conversation)
    assert loaded is not None
    assert loaded.messages == [message(0), message(1), message(2)]
    assert loaded.summary == ""


async def test_load_of_unknown_conversation_is_none(hot: HotMemory) -> None:
    assert await hot.load(BRAND, new_conversation_id()) is None


async def test_conversations_are_separate_per_brand(hot: HotMemory) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0)])
    assert await hot.load("mindagain", conversation) is None


async def test_list_is_capped_at_max_messages_keeping_the_newest(hot: HotMemory) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(i) for i in range(3)])
    await hot.store(BRAND, conversation, "alice", [message(i) for i in range(3, 7)])
    loaded = await hot.load(BRAND, conversation)
    assert loaded is not None
    assert loaded.messages == [message(i) for i in range(3, 7)]


async def test_replace_replaces_the_list(hot: HotMemory) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0), message(1)])
    await hot.store(BRAND, conversation, "alice", [message(5)], replace=True)
    loaded = await hot.load(BRAND, conversation)
    assert loaded is not None
    assert loaded.messages == [message(5)]


async def test_store_sets_the_ttl_on_both_keys(hot: HotMemory, any_redis: RedisClient) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0)])
    for key in (f"cg:{{{BRAND}}}:conv:{conversation}", f"cg:{{{BRAND}}}:msgs:{conversation}"):
        pttl = await any_redis.pttl(key)
        assert 0 < pttl <= 300_000, key


async def test_load_slides_the_ttl(hot: HotMemory, any_redis: RedisClient) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0)])
    meta_key = f"cg:{{{BRAND}}}:conv:{conversation}"
    await any_redis.pexpire(meta_key, 5_000)
    assert await hot.load(BRAND, conversation) is not None
    assert 5_000 < await any_redis.pttl(meta_key) <= 300_000


async def test_set_summary(hot: HotMemory) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0)])
    await hot.set_summary(BRAND, conversation, "a short summary")
    loaded = await hot.load(BRAND, conversation)
    assert loaded is not None
    assert loaded.summary == "a short summary"


async def test_forget_removes_the_conversation(hot: HotMemory, any_redis: RedisClient) -> None:
    conversation, other = new_conversation_id(), new_conversation_id()
    await hot.store(BRAND, conversation, "alice", [message(0)])
    await hot.store(BRAND, other, "alice", [message(0)])
    await hot.forget(BRAND, conversation)
    assert await hot.load(BRAND, conversation) is None
    assert await any_redis.exists(f"cg:{{{BRAND}}}:msgs:{conversation}") == 0
    assert await hot.load(BRAND, other) is not None


async def test_the_session_key_uses_a_key_safe_user_id(hot: HotMemory,
                                                       any_redis: RedisClient) -> None:
    conversation = new_conversation_id()
    await hot.store(BRAND, conversation, "evil}:{other}", [], touch_session=True)
    keys = [k.decode() if isinstance(k, bytes) else k
            for k in await any_redis.keys(f"cg:{{{BRAND}}}:sess:*")]
    assert len(keys) == 1
    assert keys[0].count("}") == 1  # only the brand's hash tag
    assert await any_redis.hget(keys[0], "conversation_id") == conversation.encode()
    assert 0 < await any_redis.pttl(keys[0]) <= 300_000


# --- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", ["alice", "user_42", "a.b@example.com", "x-y"])
def test_plain_user_ids_are_kept(user_id: str) -> None:
    assert user_key(user_id) == user_id


@pytest.mark.parametrize("user_id", ["a}b", "a:b", "}", "{brand}", "a b", "ü", "x" * 65, ""])
def test_other_user_ids_are_escaped(user_id: str) -> None:
    key = user_key(user_id)
    assert key != user_id
    assert key.startswith("~")
    assert "}" not in key and ":" not in key and "{" not in key


def test_escaped_user_ids_are_stable_and_distinct() -> None:
    assert user_key("a:b") == user_key("a:b")
    assert user_key("a:b") != user_key("a}b")


def test_new_conversation_ids_are_conversation_ids() -> None:
    ids = {new_conversation_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(is_conversation_id(i) for i in ids)


@pytest.mark.parametrize(
    "value",
    ["", "abc", "0" * 31, "0" * 33, "G" * 32, "A" * 32, "0" * 16 + "-" + "0" * 15,
     "12345678-1234-1234-1234-123456789abc"],
)
def test_other_strings_are_not_conversation_ids(value: str) -> None:
    assert not is_conversation_id(value)


def test_conversation_id_with_trailing_newline_is_refused() -> None:
    assert not is_conversation_id("0123456789abcdef" * 2 + "\n")
