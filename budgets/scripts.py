"""Load the Lua scripts in ``budgets/lua`` and call them by SHA, pipelining concurrent calls.

Each script is a redis-py ``Script`` object: it knows its SHA1 locally, runs with
``EVALSHA``, and on ``NOSCRIPT`` (a restarted server, a failover, ``SCRIPT FLUSH``) is
loaded and the call retried once, transparently. ``reserve``, ``settle`` and ``read``
share the lease-releasing prelude ``leases.lua``, prepended to their text here, since
Redis scripts cannot include one another.

:class:`ScriptRunner` coalesces the calls that many concurrent turns make into pipelined
round trips (auto-pipelining): a call joins a queue, and a few flushers each send what
has queued up as one non-transactional pipeline. Each script still runs atomically on
its own; only the network round trips and the client's per-call overhead are shared, so
one process runs several times more scripts per second than with one call per round trip,
on at most ``max_in_flight`` connections. Redis Cluster clients are called directly.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

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


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: list[str]
    args: list[Any]
    reply: asyncio.Future[Any]


class ScriptRunner:
    """Runs scripts by SHA; calls made concurrently share pipelined round trips."""

    def __init__(self, redis: RedisClient, *, max_batch: int = 256,
                 max_in_flight: int = 4) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pipelined = not isinstance(redis, RedisCluster)
        self._queue: deque[_Call] = deque()
        self._active = 0
        self._flushers: set[asyncio.Task[None]] = set()

    def register(self, source: str) -> AsyncScript:
        return self._redis.register_script(source)

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """The script's reply, or the error it raised."""
        if not self._pipelined:
            return await script(keys=keys, args=args)
        call = _Call(script, keys, args, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        if self._active < self._max_in_flight:
            self._active += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await call.reply

    async def _flush(self) -> None:
        # Seeing the queue empty and leaving the count happen with no await in between,
        # so a call queued meanwhile always finds a flusher running or starts one.
        try:
            while self._queue:
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                # A caller cancelled before its call left is dropped; once sent, it runs.
                await self._send([call for call in batch if not call.reply.done()])
        finally:
            self._active -= 1

    async def _send(self, batch: list[_Call]) -> None:
        if not batch:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for call in batch:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for call in batch:
                call.reply.cancel()
            raise
        except Exception as exc:  # a connection failure (or a bad argument): every
            for call in batch:  # caller of the batch gets it, none is left waiting
                _resolve(call.reply, exc)
            return
        unknown = []
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                unknown.append(call)
            else:
                _resolve(call.reply, reply)
        if unknown:
            await self._load_and_rerun(unknown)

    async def _load_and_rerun(self, calls: list[_Call]) -> None:
        """The server lost the scripts (restart, failover, SCRIPT FLUSH): load, run again."""
        try:
            for script in {c.script.sha: c.script for c in calls}.values():
                await self._redis.script_load(script.script)
        except Exception as exc:  # handed to the callers, who await these replies
            for call in calls:
                _resolve(call.reply, exc)
            return
        for call in calls:
            try:
                _resolve(call.reply, await self._redis.evalsha(
                    call.script.sha, len(call.keys), *call.keys, *call.args))
            except Exception as exc:  # handed to its caller
                _resolve(call.reply, exc)


def _resolve(reply: asyncio.Future[Any], outcome: Any) -> None:
    if reply.done():  # the caller was cancelled; the script ran (or failed) regardless
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)


@dataclass(frozen=True, slots=True)
class LedgerScripts:
    """The budget ledger's scripts, registered on one runner."""

    reserve: AsyncScript
    settle: AsyncScript
    read: AsyncScript

    @classmethod
    def register(cls, runner: ScriptRunner) -> LedgerScripts:
        return cls(
            reserve=runner.register(script_source("reserve.lua", with_prelude=True)),
            settle=runner.register(script_source("settle.lua", with_prelude=True)),
            read=runner.register(script_source("read.lua", with_prelude=True)),
        )
