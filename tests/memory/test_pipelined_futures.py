"""Pipelined calls answered as futures: queued when made, their replies converted, and
chained (``then``) without a task."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ResponseError

from memory.conversations import ConversationStore
from memory.hot import HotMemory
from memory.journal import OutboxJournal
from memory.persister import Outbox
from memory.pipelining import AutoPipeline, then, together
from memory.records import TurnRecord
from memory.redis_client import RedisClient
from tests.memory.factories import make_turn


def _upper(reply: bytes) -> str:
    return reply.decode().upper()


def _refuse(reply: Any) -> Any:
    raise ValueError(f"cannot read {reply!r}")


async def test_calls_made_one_after_another_share_one_write_and_no_task_each(
        pipeline_client: RedisClient, writes: list[int]) -> None:
    pipeline = AutoPipeline(pipeline_client, hold_connection=True)
    script = pipeline.register("return ARGV[1]")
    await pipeline.run(script, [], ["loaded"])  # connected, the script known
    writes.clear()
    before = asyncio.all_tasks()
    calls = [pipeline.command("ECHO", "a", convert=_upper), pipeline.run(script, [], ["b"]),
             pipeline.command("ECHO", "c")]
    made = asyncio.all_tasks() - before
    assert len(made) == 1  # the flusher, and no task per call
    assert not any(call.done() for call in calls)  # queued, not yet answered
    assert [await call for call in calls] == ["A", b"b", b"c"]
    assert len(writes) == 1


async def test_a_task_started_with_the_first_call_still_joins_its_batch(
        pipeline_client: RedisClient, writes: list[int]) -> None:
    """The flusher lets the step that queued the first call start its other work first."""
    pipeline = AutoPipeline(pipeline_client, hold_connection=True)
    await pipeline.command("PING")
    writes.clear()

    async def echo_then_upper(text: str) -> str:
        return _upper(await pipeline.command("ECHO", text))

    early = pipeline.command("ECHO", "first")
    late = asyncio.ensure_future(echo_then_upper("second"))
    assert (await early, await late) == (b"first", "SECOND")
    assert len(writes) == 1


async def test_a_reply_is_converted_and_a_conversion_error_is_its_callers_alone(
        any_redis: RedisClient) -> None:
    pipeline = AutoPipeline(any_redis)
    await any_redis.set("{t}:text", "not a number")
    converted = pipeline.command("ECHO", "x", convert=_upper)
    refused = pipeline.command("ECHO", "y", convert=_refuse)
    failed = pipeline.command("INCR", "{t}:text", convert=_upper)  # an error: not converted
    plain = pipeline.command("ECHO", "z")
    assert await converted == "X"
    with pytest.raises(ValueError, match="cannot read"):
        await refused
    with pytest.raises(ResponseError):
        await failed
    assert await plain == b"z"


async def test_a_script_rerun_after_noscript_is_converted_too(redis_client: RedisClient) -> None:
    pipeline = AutoPipeline(redis_client)
    script = pipeline.register("return ARGV[1]")
    await redis_client.script_flush()  # the server lost it: loaded, then rerun
    assert await pipeline.run(script, [], ["again"], convert=_upper) == "AGAIN"


async def test_without_pipelining_a_call_cancelled_at_once_leaves_nothing_unawaited(
        redis_client: RedisClient) -> None:
    pipeline = AutoPipeline(redis_client)
    pipeline._pipelined = False  # the path of a cluster client
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call = pipeline.command("INCR", "{t}:n")
        call.cancel()  # before its task has run at all
        await asyncio.sleep(0.01)
        del call
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert await redis_client.get("{t}:n") is None


async def test_without_pipelining_a_call_is_converted_as_well(redis_client: RedisClient) -> None:
    """The path of a cluster client (its commands route per slot, so they are not
    pipelined): each call runs on its own, converted the same way."""
    pipeline = AutoPipeline(redis_client)
    pipeline._pipelined = False
    script = pipeline.register("return ARGV[1]")
    assert await pipeline.run(script, [], ["s"], convert=_upper) == "S"
    assert await pipeline.command("ECHO", "c", convert=_upper) == "C"
    with pytest.raises(ValueError):
        await pipeline.command("ECHO", "c", convert=_refuse)


async def test_then_maps_a_result_and_passes_errors_on() -> None:
    loop = asyncio.get_running_loop()
    source: asyncio.Future[int] = loop.create_future()
    doubled = then(source, lambda n: n * 2)
    source.set_result(21)
    assert await doubled == 42

    source = loop.create_future()
    mapped = then(source, lambda n: n)
    source.set_exception(ResponseError("from the server"))
    with pytest.raises(ResponseError):
        await mapped

    source = loop.create_future()
    refused = then(source, _refuse)
    source.set_result(1)
    with pytest.raises(ValueError):
        await refused


async def test_then_passes_a_cancellation_both_ways(redis_client: RedisClient) -> None:
    loop = asyncio.get_running_loop()
    source: asyncio.Future[int] = loop.create_future()
    mapped = then(source, lambda n: n)
    source.cancel()
    await asyncio.sleep(0)  # the callbacks run
    assert mapped.cancelled()

    pipeline = AutoPipeline(redis_client)
    abandoned = then(pipeline.command("INCR", "{t}:n"), int)
    abandoned.cancel()  # before the batch left: the call is dropped, never sent
    assert await pipeline.command("INCR", "{t}:n") == 1
    assert abandoned.cancelled()


async def test_then_awaits_what_fn_answers_when_it_is_awaitable() -> None:
    loop = asyncio.get_running_loop()

    async def slow_path(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    async def failing_path(n: int) -> int:
        raise ValueError(f"no {n}")

    source: asyncio.Future[int] = loop.create_future()
    followed = then(source, slow_path)
    source.set_result(1)
    assert await followed == 2

    source = loop.create_future()
    failed = then(source, failing_path)
    source.set_result(1)
    with pytest.raises(ValueError, match="no 1"):
        await failed


async def test_cancelling_then_cancels_the_awaitable_it_waits_for() -> None:
    loop = asyncio.get_running_loop()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits(_: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    source: asyncio.Future[int] = loop.create_future()
    followed = then(source, waits)
    source.set_result(1)
    await started.wait()
    followed.cancel()
    async with asyncio.timeout(5):
        await cancelled.wait()
    assert followed.cancelled()


async def test_a_record_abandoned_in_flight_leaves_no_error_unseen(
        redis_client: RedisClient, unretrieved: Callable[[], list[str]]) -> None:
    """The client goes away while the turn's record is on its way: its gathered calls are
    cancelled, and nothing is reported as an error nobody looked at."""
    pipeline = AutoPipeline(redis_client)
    store = ConversationStore(HotMemory(redis_client, pipeline=pipeline),
                              OutboxJournal(Outbox(redis_client, pipeline=pipeline)), None)
    conversation = store.start("growain", "alice")

    async def ending() -> None:
        await together(asyncio.sleep(10), store.record(conversation,
                                                       make_turn(conversation.conversation_id)))

    task = asyncio.create_task(ending())
    await asyncio.sleep(0)  # the record is queued, its batch not yet back
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    del task
    assert not unretrieved()


class _SlowJournal:
    """A journal whose append is a coroutine (as DirectJournal's), slow to unwind."""

    def __init__(self) -> None:
        self.unwound = False

    async def append(self, turn: TurnRecord) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # a write in a thread, finishing
            self.unwound = True
            raise


async def test_cancelling_a_record_waits_for_a_journal_that_is_a_coroutine(
        redis_client: RedisClient) -> None:
    """As ``together`` promises: the caller's cancel goes on once the calls have unwound."""
    journal = _SlowJournal()
    store = ConversationStore(HotMemory(redis_client), journal, None)
    conversation = store.start("growain", "alice")
    task = asyncio.create_task(together(
        asyncio.sleep(10), store.record(conversation, make_turn(conversation.conversation_id)),
        return_exceptions=True))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.unwound
