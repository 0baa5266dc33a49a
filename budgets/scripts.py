"""Load the Lua scripts in ``budgets/lua`` and call them by SHA.

Each script is a redis-py ``Script`` object: it knows its SHA1 locally, runs with
``EVALSHA``, and on ``NOSCRIPT`` (a restarted server, a failover, ``SCRIPT FLUSH``) loads
itself and retries once, transparently. ``reserve``, ``settle`` and ``read`` share the
lease-releasing prelude ``leases.lua``, prepended to their text here, since Redis scripts
cannot include one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from memory.redis_client import RedisClient

PRELUDE = "leases.lua"


@cache
def script_source(name: str, *, with_prelude: bool = False) -> str:
    """The text of ``budgets/lua/<name>``, after the shared prelude when asked."""
    folder = resources.files("budgets").joinpath("lua")
    text = folder.joinpath(name).read_text("utf-8")
    if with_prelude:
        return folder.joinpath(PRELUDE).read_text("utf-8") + "\n" + text
    return text


async def run_script(script: AsyncScript, keys: list[str], args: list[Any],
                     client: Any = None) -> Any:
    """Run ``script`` by SHA (loading it on ``NOSCRIPT``); typed wrapper over redis-py's."""
    return await script(keys=keys, args=args, client=client)


@dataclass(frozen=True, slots=True)
class LedgerScripts:
    """The budget ledger's scripts, registered on one client."""

    reserve: AsyncScript
    settle: AsyncScript
    read: AsyncScript

    @classmethod
    def register(cls, redis: RedisClient) -> LedgerScripts:
        return cls(
            reserve=redis.register_script(script_source("reserve.lua", with_prelude=True)),
            settle=redis.register_script(script_source("settle.lua", with_prelude=True)),
            read=redis.register_script(script_source("read.lua", with_prelude=True)),
        )


def register_rate_limit(redis: RedisClient) -> AsyncScript:
    """The rate limiter's GCRA script, registered on ``redis``."""
    return redis.register_script(script_source("rate_limit.lua"))
