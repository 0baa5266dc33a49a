"""Hot memory in Redis: a conversation's owner and recent messages, with a sliding TTL.

Keys (all under the brand's hash tag, so a brand's keys live on one cluster shard):

    cg:{brand}:conv:<conversation_id>   HASH  owner user id, created_at, summary
    cg:{brand}:msgs:<conversation_id>   LIST  orjson StoredMessage, oldest first, capped
    cg:{brand}:sess:<user key>          HASH  last conversation, last seen

Every read and write slides the TTL (default 300 s). Conversation ids are minted by the
gateway (:func:`new_conversation_id`); anything else is rejected before touching Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from memory.ids import random_hex
from memory.pipelining import AutoPipeline
from memory.records import StoredMessage
from memory.redis_client import RedisClient

_CONVERSATION_ID = re.compile(r"^[0-9a-f]{32}$")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


# KEYS: meta, messages[, session]. ARGV: owner, now, ttl s, max messages, replace (0/1),
# has summary (0/1), summary, conversation id, then the messages (orjson). One atomic
# step: a crash can never leave a message list without its owner or its TTL.
_STORE = """
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'updated_at', ARGV[2])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'summary', ARGV[7]) end
if ARGV[5] == '1' then redis.call('DEL', KEYS[2]) end
local first = 9
while first <= #ARGV do
  local last = math.min(first + 999, #ARGV)
  redis.call('RPUSH', KEYS[2], unpack(ARGV, first, last))
  first = last + 1
end
if #ARGV >= 9 then redis.call('LTRIM', KEYS[2], '-' .. ARGV[4], '-1') end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if #KEYS == 3 then
  redis.call('HSET', KEYS[3], 'conversation_id', ARGV[8], 'last_seen', ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return 1
"""
# HSET only when the hash exists (an atomic check-and-set).
_SET_IF_PRESENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


def new_conversation_id() -> str:
    """128 random bits as 32 hex digits (uuid4's format without its version bits)."""
    return random_hex()


def is_conversation_id(value: str) -> bool:
    return bool(_CONVERSATION_ID.fullmatch(value))


def user_key(user_id: str) -> str:
    """A key-safe form of a user id: itself when plain, else a digest (never contains '}')."""
    if _PLAIN_ID.fullmatch(user_id):
        return user_id
    return "~" + hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class HotConversation:
    owner: str
    summary: str
    messages: list[StoredMessage]


class HotMemory:
    def __init__(self, redis: RedisClient, *, ttl_s: int = 300, max_messages: int = 50,
                 clock: Callable[[], float] = time.time,
                 pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)
        self._set_if_present = redis.register_script(_SET_IF_PRESENT)
        self._store = redis.register_script(_STORE)
        self.ttl_s = ttl_s
        self._max = max_messages
        self._clock = clock

    @staticmethod
    def _keys(brand: str, conversation_id: str) -> tuple[str, str]:
        return f"cg:{{{brand}}}:conv:{conversation_id}", f"cg:{{{brand}}}:msgs:{conversation_id}"

    async def load(self, brand: str, conversation_id: str) -> HotConversation | None:
        """The conversation if hot (and slide its TTL), else None."""
        meta_key, msgs_key = self._keys(brand, conversation_id)
        meta, raw_messages, *_ = await self._pipeline.group([
            ("HGETALL", meta_key), ("LRANGE", msgs_key, 0, -1),
            ("EXPIRE", meta_key, self.ttl_s), ("EXPIRE", msgs_key, self.ttl_s)])
        if b"owner" not in meta:  # absent (or a stray field): not a hot conversation
            return None
        return HotConversation(
            owner=meta[b"owner"].decode(),
            summary=meta.get(b"summary", b"").decode(),
            messages=[StoredMessage.from_dict(orjson.loads(m)) for m in raw_messages],
        )

    def store(self, brand: str, conversation_id: str, owner: str,
              messages: Sequence[StoredMessage], *, summary: str | None = None,
              replace: bool = False, touch_session: bool = False) -> asyncio.Future[Any]:
        """Append ``messages`` (or replace the list, on rehydration) and slide the TTL; with
        ``touch_session``, also mark this as the owner's current conversation (same trip).
        A future: the script is queued at once."""
        meta_key, msgs_key = self._keys(brand, conversation_id)
        keys = [meta_key, msgs_key]
        if touch_session:
            keys.append(self._session_key(brand, owner))
        args: list[Any] = [owner, repr(self._clock()), self.ttl_s, self._max, int(replace),
                           int(summary is not None), summary or "", conversation_id]
        args += [orjson.dumps(m.to_dict()) for m in messages]
        return self._pipeline.run(self._store, keys, args)

    async def set_summary(self, brand: str, conversation_id: str, summary: str) -> None:
        """Update a hot conversation's summary; never recreates one that expired or was
        deleted (its content must not come back)."""
        meta_key, _ = self._keys(brand, conversation_id)
        await self._set_if_present(keys=[meta_key], args=["summary", summary])

    async def forget(self, brand: str, conversation_id: str) -> None:
        await self._redis.delete(*self._keys(brand, conversation_id))

    @staticmethod
    def _session_key(brand: str, user_id: str) -> str:
        return f"cg:{{{brand}}}:sess:{user_key(user_id)}"
