"""Write-behind persistence: a Redis Stream outbox and the persister that drains it.

The gateway appends each finished turn to the outbox stream (``cg:outbox``, field ``turn``,
the ``TurnRecord`` as orjson) before sending ``done``; nothing on the hot path waits for
DynamoDB or S3. Persisters, one per process, share one consumer group:

1. ``XREADGROUP ... 0``: this consumer's own pending entries first (a batch that failed
   before, or entries left by this consumer name before a restart);
2. ``XAUTOCLAIM`` entries idle for ``claim_idle_ms`` in any consumer's pending list (a
   crashed process), cursor kept across passes;
3. ``XREADGROUP ... >``: new entries, blocking up to ``block_ms`` when idle.

A batch is written to warm history, and its accepted ``archive`` turns to the cold
archive; only then are its entries ``XACK``ed and ``XDEL``eted. A failure leaves them
pending and is retried with capped exponential backoff. Warm writes are idempotent on
``turn_id``; the archive is at least once. Entries that cannot be decoded go to the
dead-letter stream ``{stream}:dead`` (with their original id) and are acknowledged.

The outbox is trimmed with ``MAXLEN ~`` at a large bound (default one million entries)
as a safety valve: while persisters are down for long, the oldest unpersisted turns are
what a trim would drop. The stream has one consumer group: acknowledged entries are
deleted.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.exceptions import ResponseError

from memory.cold.base import Archive
from memory.pipelining import AutoPipeline
from memory.records import TurnRecord
from memory.redis_client import RedisClient
from memory.warm.base import HistoryStore

log = structlog.get_logger("chatgate.persister")

STREAM = "cg:outbox"
FIELD = b"turn"
GROUP = "persisters"
DEFAULT_MAXLEN = 1_000_000


def default_consumer() -> str:
    """Stable per host and process, so a restarted process finds its own pending entries."""
    return f"{socket.gethostname()}-{os.getpid()}"


def backoff_seconds(failures: int, *, base: float = 0.2, cap: float = 30.0) -> float:
    """Pause after ``failures`` consecutive failures (1, 2, …): exponential, capped."""
    return min(cap, base * 2.0 ** max(0, failures - 1))


def redis_error_code(exc: ResponseError) -> str:
    """The error code Redis puts first in an error reply (``BUSYGROUP``, ``NOGROUP``, …)."""
    return str(exc).split(" ", 1)[0]


class Outbox:
    """The producer side: one ``XADD`` per finished turn."""

    def __init__(self, redis: RedisClient, stream: str = STREAM, *,
                 maxlen: int = DEFAULT_MAXLEN, pipeline: AutoPipeline | None = None) -> None:
        self._pipeline = pipeline or AutoPipeline(redis)
        self.stream = stream
        self.maxlen = maxlen

    def append(self, turn: TurnRecord) -> asyncio.Future[str]:
        """Append ``turn`` (queued at once); the future holds the entry id once Redis
        has it."""
        return self._pipeline.command("XADD", self.stream, "MAXLEN", "~", self.maxlen, "*",
                                      FIELD, turn.to_json(), convert=_text)


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    fields: dict[bytes, bytes]  # empty: the entry was trimmed or deleted meanwhile


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: Any) -> Entry:
    pairs = fields.items() if isinstance(fields, dict) else []
    return Entry(_text(entry_id), {_bytes(k): _bytes(v) for k, v in pairs})


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def parse_read(response: Any) -> list[Entry]:
    """Entries of an ``XREADGROUP`` reply on one stream, RESP2 (list) or RESP3 (dict)."""
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (s[1] for s in response)
    return [_entry(entry_id, fields) for entries in streams for entry_id, fields in entries]


def decode_turn(entry: Entry) -> TurnRecord | None:
    """The entry's turn; None if the payload is not a turn (it goes to the dead letters)."""
    try:
        return TurnRecord.from_json(entry.fields[FIELD])
    except (KeyError, TypeError, ValueError):
        return None


class Persister:
    """The consumer side: drains the outbox to warm history and the archive."""

    def __init__(self, redis: RedisClient, history: HistoryStore, archive: Archive | None, *,
                 stream: str = STREAM, group: str = GROUP, consumer: str | None = None,
                 batch_size: int = 100, block_ms: int = 1000, claim_idle_ms: int = 60_000,
                 linger_ms: int = 50, retry_base_s: float = 0.2,
                 retry_cap_s: float = 30.0) -> None:
        """``linger_ms``: after a pass that found fewer than ``batch_size`` entries, wait
        this long before the next, so that a busy gateway writes its turns in larger
        batches (fewer warm-store writes and Redis calls per turn; persistence is behind
        the turn anyway, and an idle outbox still wakes the blocking read at once)."""
        self._redis = redis
        self._history = history
        self._archive = archive
        self.stream, self.group = stream, group
        self.consumer = consumer or default_consumer()
        self.dead_letters = f"{stream}:dead"
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.linger_s = linger_ms / 1000
        self._retry = (retry_base_s, retry_cap_s)
        self._claim_from = "0-0"
        # Own pending entries exist at start (a restart under the same name) and after a
        # failed write; idle entries of other consumers are looked for on a timer.
        self._own_pending = True
        self._next_claim_at = 0.0
        self._group_ready = False
        self._stopping = asyncio.Event()
        self.persisted = 0  # turns written since start (a gauge for metrics)

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if redis_error_code(exc) != "BUSYGROUP":
                raise
        self._group_ready = True

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass (within ``block_ms``)."""
        self._stopping.set()

    async def run(self) -> None:
        """Persist until :meth:`stop`; failures are logged and retried with backoff."""
        failures = 0
        while not self._stopping.is_set():
            try:
                handled = await self.step(block_ms=self.block_ms)
                failures = 0
                if 0 < handled < self.batch_size and self.linger_s > 0:
                    await self._pause(self.linger_s)
            except Exception as exc:
                failures += 1
                log.warning("persist_failed", failures=failures, error=type(exc).__name__,
                            exc_info=True)
                await self._pause(self._backoff(failures))

    async def drain(self, *, max_failures: int = 3) -> int:
        """Persist everything in the outbox now (without blocking for new entries).

        Includes entries other consumers left idle past ``claim_idle_ms``. Returns how many
        entries were handled; raises the last error after ``max_failures`` failures in a row
        (the entries stay pending for a later pass).
        """
        handled, failures = 0, 0
        self._own_pending = True
        while True:
            try:
                count = await self.step(block_ms=None, reclaim=True)
            except Exception:
                failures += 1
                if failures >= max_failures:
                    raise
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            handled += count
            if count == 0:
                return handled

    async def step(self, *, block_ms: int | None, reclaim: bool = False) -> int:
        """One pass: own pending (when there may be some), then entries of other consumers
        idle past ``claim_idle_ms`` (every half of it, or when ``reclaim``), then new
        entries. Returns entries handled."""
        if not self._group_ready:
            await self.ensure_group()
        try:
            handled = 0
            if self._own_pending:
                own = await self._read("0")
                handled += await self._persist(own)
                self._own_pending = len(own) >= self.batch_size  # a full batch: maybe more
            if reclaim or self._claim_due():
                handled += await self._persist(await self._reclaim())
            if handled < self.batch_size:
                wait = block_ms if handled == 0 else None
                fresh = await self._read(">", block_ms=wait)
                self._own_pending = True  # read, not yet acknowledged
                handled += await self._persist(fresh)
                self._own_pending = False
        except ResponseError as exc:
            if redis_error_code(exc) == "NOGROUP":  # the stream was deleted: recreate next time
                self._group_ready = False
            raise
        return handled

    def _claim_due(self) -> bool:
        now = asyncio.get_running_loop().time()
        if now < self._next_claim_at:
            return False
        self._next_claim_at = now + self.claim_idle_ms / 2000
        return True

    async def _read(self, start: str, *, block_ms: int | None = None) -> list[Entry]:
        response = await self._redis.xreadgroup(self.group, self.consumer, {self.stream: start},
                                                count=self.batch_size, block=block_ms)
        return parse_read(response)

    async def _reclaim(self) -> list[Entry]:
        response = await self._redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms,
            start_id=self._claim_from, count=self.batch_size)
        self._claim_from = _text(response[0])
        return [_entry(entry_id, fields) for entry_id, fields in response[1]]

    async def _persist(self, entries: Sequence[Entry]) -> int:
        """Write the entries' turns durably, then acknowledge them. Returns len(entries)."""
        if not entries:
            return 0
        turns, poison = [], []
        for entry in entries:
            turn = decode_turn(entry)
            if turn is not None:
                turns.append(turn)
            elif entry.fields:
                poison.append(entry)
        if turns:
            await self._write(turns)
        if poison:
            await self._bury(poison)
        await self._acknowledge([e.id for e in entries])
        self.persisted += len(turns)
        return len(entries)

    async def _write(self, turns: list[TurnRecord]) -> None:
        started = time.perf_counter()
        accepted = await self._history.write_turns(turns)
        archived = [t for t in accepted if t.archive]
        if archived and self._archive is not None:
            await self._archive.write(archived)
        log.debug("persisted", turns=len(turns), accepted=len(accepted), archived=len(archived),
                  ms=round((time.perf_counter() - started) * 1000, 1))

    async def _bury(self, entries: list[Entry]) -> None:
        for entry in entries:
            fields: dict[Any, Any] = {b"id": entry.id.encode(), **entry.fields}
            await self._redis.xadd(self.dead_letters, fields, maxlen=DEFAULT_MAXLEN,
                                   approximate=True)
        log.error("outbox_dead_letters", count=len(entries), stream=self.dead_letters,
                  ids=orjson.dumps([e.id for e in entries]).decode())

    async def _acknowledge(self, ids: list[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()

    def _backoff(self, failures: int) -> float:
        base, cap = self._retry
        return backoff_seconds(failures, base=base, cap=cap)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
