"""The response cache: first-turn answers, scoped to a brand, invalidated by generations.

Only first turns are cached (no earlier context). The key hashes the brand's config
fingerprint and its generation counters with the model, the system prompt and the
normalized query (plus the user, when the brand says ``cache = "user"`` or the user has
preferences that shape answers). Keys live under the brand's hash tag and the brand is in
the hash input, so two brands never share an entry:

    cg:{brand}:rc:<sha256>          STRING  orjson {text, provider, model, finish_reason}
    cg:{brand}:rc-lock:<sha256>     STRING  cross-process single-flight lock (short PX)
    cg:{brand}:gen:brand            INT     bumped by admin invalidation (scope brand)
    cg:{brand}:gen:model:<model>    INT     bumped on model change (scope model)
    cg:{brand}:gen:user:<user key>  INT     bumped on preference change (scope user)

Concurrent identical misses make one upstream call: in-process they wait on the leader's
future; across processes a ``SET NX`` lock makes the others poll briefly for the entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson

from memory.hot import user_key
from memory.redis_client import RedisClient

_SPACE = re.compile(r"\s+")
# KEYS: lock. ARGV: owner. Release the lock only if this turn holds it.
_DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: entry, lock. ARGV: owner, lock ms. {1, entry} when cached; {0} when this turn took
# the lock (it answers); {2} when another process holds it.
_GET_OR_LOCK = """
local entry = redis.call('GET', KEYS[1])
if entry then return {1, entry} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return {2}
"""
# KEYS: entry, lock. ARGV: answer, ttl s, owner. Store the answer and release the lock.
_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
LOCK_MS = 30_000
POLL_S = 0.05


def normalize_query(text: str) -> str:
    """Case-folded, whitespace-collapsed, without trailing punctuation or spaces."""
    return _SPACE.sub(" ", text.casefold()).strip().rstrip("?!.。 ")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    provider: str
    model: str
    finish_reason: str

    def to_json(self) -> bytes:
        return orjson.dumps({"text": self.text, "provider": self.provider,
                             "model": self.model, "finish_reason": self.finish_reason})

    @classmethod
    def from_json(cls, raw: bytes | str) -> CachedAnswer:
        data = orjson.loads(raw)
        return cls(text=data["text"], provider=data["provider"], model=data["model"],
                   finish_reason=data["finish_reason"])


@dataclass(frozen=True, slots=True)
class CacheKey:
    brand: str
    digest: str
    owner: str = field(default_factory=lambda: secrets.token_hex(8))  # this turn's lock token

    @property
    def entry(self) -> str:
        return f"cg:{{{self.brand}}}:rc:{self.digest}"

    @property
    def lock(self) -> str:
        return f"cg:{{{self.brand}}}:rc-lock:{self.digest}"


@dataclass(slots=True)
class Flight:
    """The outcome of joining a single flight for one key."""

    leader: bool
    future: asyncio.Future[CachedAnswer | None]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return "0"
    return value.decode() if isinstance(value, bytes) else value


class ResponseCache:
    def __init__(self, redis: RedisClient, *, wait_s: float = 30.0) -> None:
        self._redis = redis
        self._wait_s = wait_s
        self._flights: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._unlock = redis.register_script(_DELETE_IF_OWNER)
        self._get_or_lock = redis.register_script(_GET_OR_LOCK)
        self._publish = redis.register_script(_PUBLISH)

    @staticmethod
    def _gen_keys(brand: str, model: str, user_id: str | None) -> list[str]:
        keys = [f"cg:{{{brand}}}:gen:brand", f"cg:{{{brand}}}:gen:model:{model}"]
        if user_id is not None:
            keys.append(f"cg:{{{brand}}}:gen:user:{user_key(user_id)}")
        return keys

    async def key(self, *, brand: str, config_fingerprint: str, model: str,
                  system_prompt: str, query: str, user_id: str | None) -> CacheKey:
        generations = await self._redis.mget(self._gen_keys(brand, model, user_id))
        parts = [brand, config_fingerprint, model, system_prompt, normalize_query(query),
                 user_id or "", *[_text(g) for g in generations]]
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return CacheKey(brand=brand, digest=digest)

    async def get(self, key: CacheKey) -> CachedAnswer | None:
        raw = await self._redis.get(key.entry)
        return CachedAnswer.from_json(raw) if raw else None

    async def publish(self, key: CacheKey, answer: CachedAnswer, *, ttl_s: int) -> None:
        """Store a leader's answer and release its lock, in one round trip."""
        await self._publish(keys=[key.entry, key.lock],
                            args=[answer.to_json(), ttl_s, key.owner])

    @asynccontextmanager
    async def flight(self, key: CacheKey) -> AsyncIterator[Flight]:
        """Join the single flight for ``key``: the leader must call ``finish``."""
        existing = self._flights.get(key.entry)
        if existing is not None:
            yield Flight(leader=False, future=existing)
            return
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._flights[key.entry] = future
        try:
            yield Flight(leader=True, future=future)
        finally:
            self._flights.pop(key.entry, None)
            if not future.done():
                future.set_result(None)

    async def wait(self, flight: Flight) -> CachedAnswer | None:
        """A follower's wait for its leader's answer (None: the leader failed or timed out)."""
        try:
            return await asyncio.wait_for(asyncio.shield(flight.future), self._wait_s)
        except TimeoutError:
            return None

    async def lock_or_wait(self, key: CacheKey) -> CachedAnswer | None:
        """Take the cross-process lock (None: go ahead and answer), or return the answer
        another leader stored (waiting for it while another process holds the lock)."""
        # Double-checked in the same script: a leader may have stored the answer since our
        # first lookup.
        reply = await self._get_or_lock(keys=[key.entry, key.lock], args=[key.owner, LOCK_MS])
        if int(reply[0]) == 1:
            return CachedAnswer.from_json(reply[1])
        if int(reply[0]) == 0:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            answer = await self.get(key)
            if answer is not None:
                return answer
            if not await self._redis.exists(key.lock):
                return None
        return None

    async def unlock(self, key: CacheKey) -> None:
        """Release the lock if this turn still holds it (never another process's)."""
        await self._unlock(keys=[key.lock], args=[key.owner])

    async def invalidate(self, brand: str, *, scope: str, model: str | None = None,
                         user_id: str | None = None) -> int:
        """Bump a generation counter; entries under the old generation are never read."""
        if scope == "brand":
            key = f"cg:{{{brand}}}:gen:brand"
        elif scope == "model" and model:
            key = f"cg:{{{brand}}}:gen:model:{model}"
        elif scope == "user" and user_id:
            key = f"cg:{{{brand}}}:gen:user:{user_key(user_id)}"
        else:
            raise ValueError("scope must be brand, model (with model) or user (with user_id)")
        return int(await self._redis.incr(key))
