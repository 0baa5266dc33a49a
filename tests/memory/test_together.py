"""``together``: independent calls at once, their Redis commands in one round trip, with
gather's results, errors and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ResponseError

from memory.pipelining import AutoPipeline, together
from memory.redis_client import RedisClient


async def _echo_upper(pipeline: AutoPipeline, text: str) -> str:
    """A call with work after its reply, as the service's are."""
    reply = await pipeline.command("ECHO", text)
    return bytes(reply).decode().upper()


async def test_calls_together_share_one_write_and_keep_their_order(
        pipeline_client: RedisClient, writes: list[int]) -> None:
    pipeline = AutoPipeline(pipeline_client, hold_connection=True)
    await pipeline.command("PING")  # connected: connecting writes commands of its own
    writes.clear()
    results = await together(_echo_upper(pipeline, "a"), _echo_upper(pipeline, "b"),
                             pipeline.command("ECHO", "c"))
    assert results == ["A", "B", b"c"]
    assert len(writes) == 1
    writes.clear()
    one_by_one = [await _echo_upper(pipeline, text) for text in "ab"]  # what it saves
    assert one_by_one == ["A", "B"] and len(writes) == 2


async def test_the_first_error_is_raised_and_the_other_calls_finish_unharmed(
        redis_client: RedisClient, unretrieved: Callable[[], list[str]]) -> None:
    pipeline = AutoPipeline(redis_client)
    await redis_client.set("{t}:text", "not a number")
    calls = [pipeline.command("INCR", "{t}:text"),
             pipeline.command("SET", "{t}:after", "1"),
             pipeline.command("HGET", "{t}:text", "f")]  # fails as well
    with pytest.raises(ResponseError):
        await together(*calls)
    await asyncio.wait(calls[1:])  # the other calls were left to run, as gather leaves them
    assert not any(call.cancelled() for call in calls)  # (none was cancelled)
    del calls
    assert await redis_client.get("{t}:after") == b"1"
    assert not unretrieved()


async def test_with_return_exceptions_every_outcome_is_in_its_place(
        redis_client: RedisClient) -> None:
    pipeline = AutoPipeline(redis_client)
    await redis_client.set("{t}:text", "not a number")
    ok, failed, last = await together(
        pipeline.command("ECHO", "x"), pipeline.command("INCR", "{t}:text"),
        pipeline.command("ECHO", "y"), return_exceptions=True)
    assert (ok, last) == (b"x", b"y")
    assert isinstance(failed, ResponseError)


async def test_cancelling_the_caller_cancels_the_calls_still_running() -> None:
    cancelled: list[str] = []
    started = asyncio.Event()

    async def waits_forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    caller = asyncio.create_task(together(waits_forever("first"), waits_forever("second"),
                                          waits_forever("third")))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(cancelled) == ["first", "second", "third"]


async def test_a_cancelled_caller_goes_on_only_once_its_calls_have_unwound() -> None:
    """As gather: the cancellation reaches the caller after every call's cleanup ran."""
    order: list[str] = []
    started = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            await asyncio.sleep(0)
            order.append("cleaned up")

    async def caller() -> None:
        try:
            await together(asyncio.Event().wait(), slow_cleanup())
        finally:
            order.append("caller cancelled")

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert order == ["cleaned up", "caller cancelled"]


async def cancelled_from_elsewhere() -> None:
    """A call whose awaited reply is cancelled by someone else, not by its caller (as the
    pipeline cancels a batch's replies when its flusher is cancelled)."""
    reply = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(reply.cancel)
    await reply


async def test_a_calls_own_cancellation_is_its_outcome_not_the_callers() -> None:
    """A call cancelled by someone else (the pipeline cancels a batch's replies when its
    flusher is cancelled): with return_exceptions it takes its place and the others
    finish; without, it is raised and the others are left to run, as gather does."""
    async def answer() -> str:
        await asyncio.sleep(0)
        return "answer"

    done, cancelled, late = await together(answer(), cancelled_from_elsewhere(), answer(),
                                           return_exceptions=True)
    assert (done, late) == ("answer", "answer")
    assert isinstance(cancelled, asyncio.CancelledError)

    finished = asyncio.Event()

    async def finishes() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        finished.set()

    with pytest.raises(asyncio.CancelledError):
        await together(cancelled_from_elsewhere(), finishes())
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the caller was not
    await asyncio.wait_for(finished.wait(), 5)  # left to run, not cancelled


async def test_a_cancel_a_call_turns_into_an_error_still_cancels_the_caller() -> None:
    """The caller's cancel, made an ordinary error by the call it reached: as gather, the
    other calls are cancelled and the caller's cancellation goes on."""
    cancelled: list[str] = []
    started = asyncio.Event()

    async def converts() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("converted") from None

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("other")
            raise

    caller = asyncio.create_task(together(converts(), other(), return_exceptions=True))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled == ["other"]


async def test_a_cancel_swallowed_earlier_does_not_make_a_calls_own_one_the_callers() -> None:
    """A caller whose task once swallowed a cancel (its count stays up) still gets a
    call's own cancellation in place."""
    async def caller() -> list[Any]:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, without uncancel()
            await asyncio.sleep(3600)
        return await together(cancelled_from_elsewhere(), asyncio.sleep(0, "after"),
                              return_exceptions=True)

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    own, after = await task
    assert isinstance(own, asyncio.CancelledError) and after == "after"
