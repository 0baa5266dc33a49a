"""The write-behind persister on a real Redis and on the embedded memory:// backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from memory.cold.files import FileArchive
from memory.persister import Entry, Outbox, Persister, backoff_seconds, parse_read
from memory.records import TurnRecord
from memory.redis_client import RedisClient
from memory.warm.sqlite import SqliteHistory
from tests.memory.factories import START, FakeClock, make_turn

pytestmark = pytest.mark.timeout(30)


class FlakyHistory(SqliteHistory):
    """SQLite history whose next ``failures`` writes fail as if the store were down."""

    failures = 0
    attempts = 0

    async def write_turns(self, turns: Sequence[TurnRecord]) -> list[TurnRecord]:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("warm store unavailable")
        return await super().write_turns(turns)


@pytest.fixture
async def history(tmp_path: Path, clock: FakeClock) -> AsyncIterator[FlakyHistory]:
    store = FlakyHistory(str(tmp_path / "history.db"), clock=clock)
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture
def archive(tmp_path: Path) -> FileArchive:
    return FileArchive(tmp_path / "archive")


def persister(redis: RedisClient, history: FlakyHistory, archive: FileArchive | None = None,
              **options: int | str | float) -> Persister:
    settings: dict[str, int | str | float] = {"consumer": "p1", "block_ms": 20,
                                              "retry_base_s": 0.01, **options}
    return Persister(redis, history, archive, **settings)  # type: ignore[arg-type]


async def pending(redis: RedisClient, group: str = "persisters") -> int:
    summary = await redis.xpending("cg:outbox", group)
    return int(summary["pending"])


async def stored_turns(history: FlakyHistory, conversation_id: str = "c1") -> int:
    return len(await history.messages("growain", "alice", conversation_id)) // 2


async def test_appended_turns_land_in_warm_history_and_archive(
        any_redis: RedisClient, history: FlakyHistory, archive: FileArchive) -> None:
    outbox = Outbox(any_redis)
    for i in range(5):
        await outbox.append(make_turn("c1", at=START + i, archive=i % 2 == 0))
    worker = persister(any_redis, history, archive)

    assert await worker.drain() == 5
    assert await stored_turns(history) == 5
    archived = await archive.read("growain")
    assert [t.created_at for t in archived] == [START, START + 2, START + 4]
    assert await any_redis.xlen("cg:outbox") == 0
    assert await pending(any_redis) == 0
    assert await worker.drain() == 0


async def test_a_failed_write_leaves_entries_pending_until_the_next_pass(
        any_redis: RedisClient, history: FlakyHistory) -> None:
    outbox = Outbox(any_redis)
    for i in range(3):
        await outbox.append(make_turn("c1", at=START + i))
    worker = persister(any_redis, history)
    history.failures = 1

    with pytest.raises(ConnectionError):
        await worker.step(block_ms=None)
    assert await pending(any_redis) == 3
    assert await stored_turns(history) == 0

    assert await worker.step(block_ms=None) == 3
    assert await stored_turns(history) == 3
    assert await pending(any_redis) == 0


async def test_run_retries_with_backoff_and_stops(any_redis: RedisClient,
                                                  history: FlakyHistory) -> None:
    worker = persister(any_redis, history)
    history.failures = 2
    task = asyncio.create_task(worker.run())
    await Outbox(any_redis).append(make_turn("c1"))

    deadline = time.monotonic() + 5
    while await stored_turns(history) < 1:
        assert time.monotonic() < deadline, "the turn was never persisted"
        await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(task, timeout=2)
    assert history.attempts == 3 and await pending(any_redis) == 0


class BatchRecordingHistory(FlakyHistory):
    batches: list[int]

    async def write_turns(self, turns: Sequence[TurnRecord]) -> list[TurnRecord]:
        self.batches.append(len(turns))
        return await super().write_turns(turns)


async def test_a_busy_outbox_is_written_in_batches(any_redis: RedisClient, tmp_path: Path,
                                                   clock: FakeClock) -> None:
    """After a short pass the persister lingers, so turns that arrive meanwhile are
    written together (here within a 1 s linger; appending ten takes milliseconds)."""
    store = BatchRecordingHistory(str(tmp_path / "batches.db"), clock=clock)
    store.batches = []
    await store.start()
    worker = persister(any_redis, store, linger_ms=1000, block_ms=1000)
    task = asyncio.create_task(worker.run())
    outbox = Outbox(any_redis)
    try:
        await outbox.append(make_turn("c1", turn_id="t0"))
        deadline = time.monotonic() + 5
        while worker.persisted < 1:
            assert time.monotonic() < deadline, "the first turn was never persisted"
            await asyncio.sleep(0.005)
        for i in range(1, 11):  # the persister is lingering now
            await outbox.append(make_turn("c1", turn_id=f"t{i}"))
        while worker.persisted < 11:
            assert time.monotonic() < deadline, "the ten turns were never persisted"
            await asyncio.sleep(0.005)
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=3)
        await store.aclose()
    assert store.batches == [1, 10]


async def test_entries_of_a_crashed_consumer_are_reclaimed(any_redis: RedisClient,
                                                           history: FlakyHistory) -> None:
    outbox = Outbox(any_redis)
    for i in range(4):
        await outbox.append(make_turn("c1", at=START + i))
    survivor = persister(any_redis, history, consumer="survivor", claim_idle_ms=50)
    await survivor.ensure_group()
    taken = await any_redis.xreadgroup("persisters", "crashed", {"cg:outbox": ">"}, count=10)
    assert len(parse_read(taken)) == 4  # read and never acknowledged: the consumer died

    deadline = time.monotonic() + 5
    while await stored_turns(history) < 4:
        assert time.monotonic() < deadline, "pending entries were never reclaimed"
        await survivor.drain()
        await asyncio.sleep(0.02)
    assert await pending(any_redis) == 0
    assert await any_redis.xlen("cg:outbox") == 0


async def test_undecodable_entries_go_to_dead_letters(any_redis: RedisClient,
                                                      history: FlakyHistory) -> None:
    await any_redis.xadd("cg:outbox", {"turn": b"{not json"})
    await Outbox(any_redis).append(make_turn("c1"))

    assert await persister(any_redis, history).drain() == 2
    assert await stored_turns(history) == 1
    dead = await any_redis.xrange("cg:outbox:dead")
    assert len(dead) == 1 and dead[0][1][b"turn"] == b"{not json"
    assert await any_redis.xlen("cg:outbox") == 0


async def test_drain_gives_up_after_repeated_failures(any_redis: RedisClient,
                                                      history: FlakyHistory) -> None:
    await Outbox(any_redis).append(make_turn("c1"))
    history.failures = 10
    with pytest.raises(ConnectionError):
        await persister(any_redis, history).drain(max_failures=2)
    assert await pending(any_redis) == 1


async def test_turns_of_a_deleted_conversation_are_not_archived(
        any_redis: RedisClient, history: FlakyHistory, archive: FileArchive) -> None:
    await history.write_turns([make_turn("c1")])
    await history.delete_conversation("growain", "alice", "c1")
    await Outbox(any_redis).append(make_turn("c1", at=START + 1, archive=True))

    assert await persister(any_redis, history, archive).drain() == 1
    assert await archive.read("growain") == []
    assert await history.get_conversation("growain", "alice", "c1") is None


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n, base=0.1, cap=1.0) for n in (1, 2, 3, 4, 5)] == [
        0.1, 0.2, 0.4, 0.8, 1.0]


def test_parse_read_accepts_resp2_and_resp3_replies() -> None:
    resp2 = [[b"cg:outbox", [(b"1-0", {b"turn": b"x"})]]]
    resp3 = {b"cg:outbox": [[b"1-0", {b"turn": b"x"}]]}
    expected = [Entry("1-0", {b"turn": b"x"})]
    assert parse_read(resp2) == expected == parse_read(resp3)
    assert parse_read(None) == [] == parse_read([])


async def test_a_deleted_stream_and_group_are_recreated(any_redis: RedisClient,
                                                        history: FlakyHistory) -> None:
    worker = persister(any_redis, history)
    assert await worker.drain() == 0
    await any_redis.delete("cg:outbox")  # e.g. an operator flushed it

    with pytest.raises(ResponseError):
        await worker.step(block_ms=None)
    await Outbox(any_redis).append(make_turn("c1"))
    assert await worker.drain() == 1
    assert await stored_turns(history) == 1
