"""User preferences (language, tone, …): kept per user, fed into that user's context.

    cg:{brand}:prefs:<user key>   HASH  name → value

Changing preferences bumps the user's cache generation (see ``memory.response_cache``),
so answers cached under the old preferences are never served again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from memory.hot import user_key
from memory.pipelining import AutoPipeline
from memory.redis_client import RedisClient

ALLOWED = {"language": 32, "tone": 32, "style": 64, "expertise": 32, "name": 64}


class PreferenceError(ValueError):
    pass


def validate_preferences(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise PreferenceError("preferences must be a JSON object")
    prefs: dict[str, str] = {}
    for name, value in raw.items():
        if name not in ALLOWED:
            raise PreferenceError(f"unknown preference {name!r} (known: "
                                  f"{', '.join(sorted(ALLOWED))})")
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > ALLOWED[name]:
            raise PreferenceError(f"{name} must be a string of at most {ALLOWED[name]} "
                                  "characters")
        prefs[name] = value
    return prefs


def preferences_prompt(prefs: Mapping[str, str]) -> str:
    """The system-prompt line that carries a user's preferences ('' when none)."""
    if not prefs:
        return ""
    listed = "; ".join(f"{k}: {v}" for k, v in sorted(prefs.items()))
    return f"The user's preferences ({listed}). Follow them."


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _texts(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An ``HGETALL`` reply (bytes or text) as text."""
    return {_text(k): _text(v) for k, v in raw.items()}


class PreferenceStore:
    def __init__(self, redis: RedisClient, *, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)

    @staticmethod
    def _key(brand: str, user_id: str) -> str:
        return f"cg:{{{brand}}}:prefs:{user_key(user_id)}"

    def get(self, brand: str, user_id: str) -> asyncio.Future[dict[str, str]]:
        """The user's preferences (a future: the read is queued at once)."""
        return self._pipeline.command("HGETALL", self._key(brand, user_id), convert=_texts)

    async def replace(self, brand: str, user_id: str, prefs: Mapping[str, str]) -> bool:
        """Store ``prefs`` (replacing the old ones); True if anything changed."""
        key = self._key(brand, user_id)
        old = await self.get(brand, user_id)
        if old == dict(prefs):
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if prefs:
                pipe.hset(key, mapping=dict[Any, Any](prefs))
            await pipe.execute()
        return True
