"""TurnControl: the client's cancel reaches whatever the turn hooked to it, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.auth import Principal
from gateway.frames import ChatFrame
from gateway.service import ChatService, TurnControl, TurnState
from providers.base import TextDelta


def test_hooks_run_once_when_cancelled() -> None:
    control, calls = TurnControl(), []
    control.on_cancel(lambda: calls.append("a"))
    control.on_cancel(lambda: calls.append("b"))
    control.cancel()
    control.cancel()
    assert calls == ["a", "b"] and control.cancelled.is_set()


def test_a_hook_added_after_the_cancel_runs_at_once() -> None:
    control, calls = TurnControl(), []
    control.cancel()
    control.on_cancel(lambda: calls.append("late"))
    assert calls == ["late"]


def test_a_discarded_hook_does_not_run() -> None:
    control, calls = TurnControl(), []

    def hook() -> None:
        calls.append("hook")

    control.on_cancel(hook)
    control.discard(hook)
    control.discard(hook)  # twice is fine
    control.cancel()
    assert calls == []


# --- the stream's pumping, cancelled by the client or from outside -----------------------

class _Sink:
    def __init__(self) -> None:
        self.frames: list[object] = []

    async def send(self, frame: object) -> None:
        self.frames.append(frame)


class _Stream:
    """One delta, then nothing until closed; says whether it was closed."""

    def __init__(self) -> None:
        self.closed = False
        self.waiting = asyncio.Event()

    async def events(self) -> AsyncIterator[object]:
        try:
            yield TextDelta("hello")
            self.waiting.set()
            await asyncio.Event().wait()
        finally:
            self.closed = True


def _turn() -> TurnState:
    return TurnState(request_id="r1", frame=ChatFrame(id="c1", content="hi"),
                     principal=Principal("alice", "growain", "free"), started_at=0.0)


async def _streaming(control: TurnControl) -> tuple[asyncio.Task[None], TurnState, _Stream]:
    """The stream's pumping in a task of its own (as the turn's), waiting past its delta."""
    service, state, stream = ChatService.__new__(ChatService), _turn(), _Stream()
    task = asyncio.create_task(service._stream(state, _Sink(), control, stream.events()))
    await stream.waiting.wait()
    return task, state, stream


async def test_the_clients_cancel_ends_the_stream_and_the_turn_goes_on() -> None:
    control = TurnControl()
    task, state, stream = await _streaming(control)
    control.cancel()
    await task  # returns: the turn's ending runs next
    assert state.outcome == "cancelled" and stream.closed


async def test_a_cancel_from_outside_propagates() -> None:
    task, _, stream = await _streaming(TurnControl())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.closed


async def test_a_cancel_from_outside_with_the_clients_still_propagates() -> None:
    control = TurnControl()
    task, _, stream = await _streaming(control)
    control.cancel()
    task.cancel()  # before the task has run again: both requests are pending
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.closed
