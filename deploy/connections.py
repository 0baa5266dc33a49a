"""Connections and chats in flight, in Redis: what one invocation tells the next.

On Lambda every frame is its own invocation, maybe in another process, so nothing about
a connection can live in memory. Per connection (both keys share the hash tag
``{connectionId}``, so one ``DEL`` removes them, also on Redis Cluster):

- ``chatgate:conn:{ID}:principal``: the claims verified at ``$connect`` (JSON), with a
  TTL a little over API Gateway's two-hour connection limit; deleted at ``$disconnect``.
- ``chatgate:conn:{ID}:chats``: a hash of the chats in flight, ``chat id →
  "EXPIRES_MS:STATE"`` with STATE ``run`` or ``cancel``. Each entry has its own lease,
  so a chat left behind by a crashed invocation stops counting after it.

Cancel across invocations: a ``cancel`` frame sets its chat's state to ``cancel`` (only
if that chat is in flight: a cancel for anything else is ignored, as on the aiohttp
socket). The invocation running the chat polls its entry (one ``HGET``) every
``cancel_poll_ms`` and, on ``cancel``, sets the turn's ``TurnControl``. Polling was chosen
over pub/sub: it needs no subscriber connection per turn, survives a Redis failover, is
cheap (ten small reads a second per turn at the default), and its latency is bounded
whether or not tokens are flowing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import orjson
from redis.commands.core import AsyncScript

from gateway.auth import Principal
from memory.redis_client import RedisClient

# KEYS[1] chats hash; ARGV chat id, max chats, now ms, lease ms, key ttl s.
# Returns 0 started, 1 already in flight, 2 too many in flight.
BEGIN_CHAT = """
local now = tonumber(ARGV[3])
local live = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local expires = tonumber(string.match(entries[i + 1], '^(%d+):'))
  if expires == nil or expires <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif entries[i] == ARGV[1] then
    return 1
  else
    live = live + 1
  end
end
if live >= tonumber(ARGV[2]) then return 2 end
redis.call('HSET', KEYS[1], ARGV[1], tostring(now + tonumber(ARGV[4])) .. ':run')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 0
"""

# KEYS[1] chats hash; ARGV chat id, now ms. Returns 1 when a chat in flight was marked.
CANCEL_CHAT = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
local expires = string.match(entry, '^(%d+):')
if expires == nil or tonumber(expires) <= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], expires .. ':cancel')
return 1
"""


class ChatAdmission(enum.Enum):
    STARTED = 0
    DUPLICATE = 1
    TOO_MANY = 2


def principal_key(connection_id: str) -> str:
    return f"chatgate:conn:{{{connection_id}}}:principal"


def chats_key(connection_id: str) -> str:
    return f"chatgate:conn:{{{connection_id}}}:chats"


def encode_principal(principal: Principal) -> bytes:
    return orjson.dumps({"sub": principal.user_id, "brand": principal.brand,
                         "plan": principal.plan, "roles": sorted(principal.roles)})


def decode_principal(data: bytes | str) -> Principal | None:
    try:
        claims = orjson.loads(data)
        return Principal(user_id=claims["sub"], brand=claims["brand"], plan=claims["plan"],
                         roles=frozenset(claims.get("roles", ())))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class ConnectionRegistry:
    def __init__(self, redis: RedisClient, *, connection_ttl_s: int, chat_lease_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._connection_ttl_s = connection_ttl_s
        self._chat_lease_ms = chat_lease_s * 1000
        self._clock = clock
        self._begin: AsyncScript = redis.register_script(BEGIN_CHAT)
        self._cancel: AsyncScript = redis.register_script(CANCEL_CHAT)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def register(self, connection_id: str, principal: Principal) -> None:
        await self._redis.set(principal_key(connection_id), encode_principal(principal),
                              ex=self._connection_ttl_s)

    async def principal(self, connection_id: str) -> Principal | None:
        data = await self._redis.get(principal_key(connection_id))
        return decode_principal(data) if data is not None else None

    async def forget(self, connection_id: str) -> None:
        await self._redis.delete(principal_key(connection_id), chats_key(connection_id))

    async def begin_chat(self, connection_id: str, chat_id: str, *,
                         max_chats: int) -> ChatAdmission:
        reply = await self._begin(
            keys=[chats_key(connection_id)],
            args=[chat_id, max_chats, self._now_ms(), self._chat_lease_ms,
                  self._connection_ttl_s])
        return ChatAdmission(int(reply))

    async def end_chat(self, connection_id: str, chat_id: str) -> None:
        await self._redis.hdel(chats_key(connection_id), chat_id)

    async def cancel_chat(self, connection_id: str, chat_id: str) -> bool:
        """Mark a chat in flight as cancelled; False when it is not in flight."""
        reply = await self._cancel(keys=[chats_key(connection_id)],
                                   args=[chat_id, self._now_ms()])
        return bool(int(reply))

    async def is_cancelled(self, connection_id: str, chat_id: str) -> bool:
        entry = await self._redis.hget(chats_key(connection_id), chat_id)
        if entry is None:
            return False
        text = entry.decode() if isinstance(entry, bytes) else str(entry)
        return text.endswith(":cancel")
