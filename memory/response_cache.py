"""The response cache: first-turn answers, scoped to a brand, invalidated by generations.

Only first turns are cached (no earlier context). The key hashes the brand's config
fingerprint with the model, the system prompt and the normalized query (plus the user,
when the brand says ``cache = "user"`` or the user has preferences that shape answers).
Keys live under the brand's hash tag and the brand is in the hash input, so two brands
never share an entry:

    cg:{brand}:rc:<sha256>          STRING  '<generations>\n' + orjson {text, provider,
                                            model, finish_reason}
    cg:{brand}:rc-lock:<sha256>     STRING  cross-process single-flight lock (short PX)
    cg:{brand}:gen:brand            INT     bumped by admin invalidation (scope brand)
    cg:{brand}:gen:model:<model>    INT     bumped on model change (scope model)
    cg:{brand}:gen:user:<user key>  INT     bumped on preference change (scope user)

An entry carries the generation counters it was answered under; the lookup script reads
the current counters with the entry and serves it only when they match, so bumping a
counter invalidates at once, and a lookup is one round trip: cached answer, or the lock
taken, or someone else answering. A leader publishes only if no counter moved since its
lookup.

Concurrent identical misses make one upstream call: in-process they wait on the leader's
future; across processes a ``SET NX`` lock makes the others poll briefly for the entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson

from memory.hot import user_key
from memory.ids import random_hex
from memory.pipelining import AutoPipeline
from memory.redis_client import RedisClient

_SPACE = re.compile(r"\s+")
# KEYS: lock. ARGV: owner. Release the lock only if this turn holds it.
_DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The generations, as one string: each counter (0 when unset), dot-separated.
_GENERATIONS = """
local function generations(first)
  local parts = {}
  for i = first, #KEYS do parts[#parts + 1] = redis.call('GET', KEYS[i]) or '0' end
  return table.concat(parts, '.')
end
"""
# KEYS: entry, lock, generation counters. ARGV: owner, lock ms (0: only look).
# An entry is '<generations>\n<answer json>'; one stored under other generations is stale.
# Replies {1, answer, gens}: cached; {0, gens}: this turn took the lock (it answers);
# {2, gens}: another turn holds the lock; {3, gens}: nothing cached, nobody answering.
_LOOKUP = _GENERATIONS + """
local gens = generations(3)
local entry = redis.call('GET', KEYS[1])
if entry then
  local cut = string.find(entry, '\\n', 1, true)
  if cut and string.sub(entry, 1, cut - 1) == gens then
    return {1, string.sub(entry, cut + 1), gens}
  end
end
if ARGV[2] == '0' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {2, gens} end
  return {3, gens}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, gens} end
return {2, gens}
"""
# KEYS: entry, lock, generation counters. ARGV: answer json, ttl s, owner, generations seen
# at lookup. Store the answer unless a generation moved meanwhile; release the lock.
_PUBLISH = _GENERATIONS + """
local stored = 0
if generations(3) == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[4] .. '\\n' .. ARGV[1], 'EX', ARGV[2])
  stored = 1
end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return stored
"""
# What the lookup script found (its reply's first element).
CACHED, LOCKED_FOR_US, LOCKED_BY_ANOTHER, UNLOCKED = 1, 0, 2, 3
LOCK_MS = 30_000
POLL_S = 0.05


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    generation_keys: tuple[str, ...]
    owner: str = field(default_factory=lambda: random_hex(8))  # this turn's lock token

    @property
    def entry(self) -> str:
        return f"cg:{{{self.brand}}}:rc:{self.digest}"

    @property
    def lock(self) -> str:
        return f"cg:{{{self.brand}}}:rc-lock:{self.digest}"

    @property
    def script_keys(self) -> list[str]:
        return [self.entry, self.lock, *self.generation_keys]


@dataclass(slots=True)
class Flight:
    """The outcome of joining a single flight for one key; a leader that took the lock
    learns the generations it must publish under."""

    leader: bool
    future: asyncio.Future[CachedAnswer | None]
    generations: str = ""


class ResponseCache:
    def __init__(self, redis: RedisClient, *, wait_s: float = 30.0,
                 pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)
        self._wait_s = wait_s
        self._flights: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._unlock = redis.register_script(_DELETE_IF_OWNER)
        self._lookup = redis.register_script(_LOOKUP)
        self._publish = redis.register_script(_PUBLISH)

    @staticmethod
    def _gen_keys(brand: str, model: str, user_id: str | None) -> tuple[str, ...]:
        keys: tuple[str, ...] = (f"cg:{{{brand}}}:gen:brand",
                                 f"cg:{{{brand}}}:gen:model:{model}")
        if user_id is not None:
            keys += (f"cg:{{{brand}}}:gen:user:{user_key(user_id)}",)
        return keys

    def key(self, *, brand: str, config_fingerprint: str, model: str, system_prompt: str,
            query: str, user_id: str | None) -> CacheKey:
        """The entry's key; the generations it must match are checked on every lookup."""
        parts = [brand, config_fingerprint, model, system_prompt, normalize_query(query),
                 user_id or ""]
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return CacheKey(brand=brand, digest=digest,
                        generation_keys=self._gen_keys(brand, model, user_id))

    async def _look(self, key: CacheKey, lock_ms: int) -> tuple[int, CachedAnswer | None, str]:
        reply = await self._pipeline.run(self._lookup, key.script_keys, [key.owner, lock_ms])
        state = int(reply[0])
        if state == CACHED:
            return state, CachedAnswer.from_json(reply[1]), _text(reply[2])
        return state, None, _text(reply[1])

    async def get(self, key: CacheKey) -> CachedAnswer | None:
        """The answer cached under the current generations, if any (takes no lock)."""
        return (await self._look(key, 0))[1]

    def publish(self, key: CacheKey, flight: Flight, answer: CachedAnswer, *,
                ttl_s: int) -> asyncio.Future[bool]:
        """Store a leader's answer (unless invalidated since its lookup) and release its
        lock, in one round trip; True if stored (a future: the script is queued at once)."""
        return self._pipeline.run(self._publish, key.script_keys,
                                  [answer.to_json(), ttl_s, key.owner, flight.generations],
                                  convert=bool)

    @asynccontextmanager
    async def flight(self, key: CacheKey) -> AsyncIterator[Flight]:
        """Join the single flight for ``key``: the first in this process leads (its
        future resolves when it leaves: with the answer it published, else None)."""
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

    async def lock_or_wait(self, key: CacheKey, flight: Flight) -> CachedAnswer | None:
        """The cached answer; else take the cross-process lock and return None (go ahead
        and answer); else, while another process holds the lock, wait for its answer
        (None if it gives up). One round trip when the answer is cached or the lock free."""
        state, answer, flight.generations = await self._look(key, LOCK_MS)
        if state != LOCKED_BY_ANOTHER:
            return answer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            state, answer, _ = await self._look(key, 0)
            if state != LOCKED_BY_ANOTHER:  # answered, or the other gave up (answer uncached)
                return answer
        return None

    async def unlock(self, key: CacheKey) -> None:
        """Release the lock if this turn still holds it (never another process's)."""
        await self._pipeline.run(self._unlock, [key.lock], [key.owner])

    async def invalidate(self, brand: str, *, scope: str, model: str | None = None,
                         user_id: str | None = None) -> int:
        """Bump a generation counter; entries stored under the old one are never served."""
        if scope == "brand":
            key = f"cg:{{{brand}}}:gen:brand"
        elif scope == "model" and model:
            key = f"cg:{{{brand}}}:gen:model:{model}"
        elif scope == "user" and user_id:
            key = f"cg:{{{brand}}}:gen:user:{user_key(user_id)}"
        else:
            raise ValueError("scope must be brand, model (with model) or user (with user_id)")
        return int(await self._redis.incr(key))
