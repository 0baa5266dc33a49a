"""A per-stream idle watchdog: one timer per stream instead of one timeout per event.

The router bounds the silence of a committed provider stream: waiting longer than
``chunk_timeout_s`` for its next event is a failure. Wrapping each ``anext`` in
``asyncio.timeout`` does that, but per event it builds a ``Timeout``, looks up the task,
schedules a fresh ``TimerHandle`` on the loop's heap and cancels it again; on a busy
gateway, with hundreds of deltas per answer, that was several percent of the CPU.

:class:`IdleWatch` keeps the same contract at O(1) cost per event. Entering it (a plain
``with``, around the ``await`` that waits for the next event) notes the loop time, the
waiting task and its ``cancelling()`` count; leaving it clears a flag. A single timer
handle serves the whole stream and is only touched when it fires:

* if no wait is in progress (the consumer is busy between events, e.g. writing to a slow
  client) it is dropped, and the next wait arms a new one: time spent outside the
  ``with`` never counts against the timeout;
* if the current wait began after the handle was armed (the stream made progress) it is
  re-armed for that wait's own deadline;
* otherwise the current wait has lasted ``timeout_s``: the task is cancelled, and leaving
  the ``with`` turns that ``CancelledError`` into ``TimeoutError``.

So the timer fires at most about once per ``timeout_s`` of wall time, however many events
flow. The cancellation bookkeeping is :class:`asyncio.Timeout`'s: the watchdog's cancel is
withdrawn with ``uncancel()``, and the ``CancelledError`` becomes ``TimeoutError`` only when
no other cancel request arrived meanwhile, so an outside cancel (the client went away)
still propagates. :meth:`IdleWatch.close` cancels the handle; the owner calls it when the
stream ends, fails or is closed. A watch that is never closed holds its handle at most
until the next firing, which finds no wait in progress and drops it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any


class IdleWatch:
    """Raises ``TimeoutError`` out of a ``with`` block that waits longer than ``timeout_s``.

    Enter it around each wait for the next event of one stream, from within a task;
    the block must not be nested or shared between concurrent waits.
    """

    __slots__ = ("_cancelling", "_expiring", "_handle", "_loop", "_since", "_task",
                 "_timeout_s", "_waiting", "_when")

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0  # the loop time the handle fires at
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0  # the task's cancel requests when the current wait began
        self._since = 0.0  # the loop time the current (or last) wait began
        self._waiting = False
        self._expiring = False  # the watchdog cancelled the task; the wait has not ended

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def handle(self) -> asyncio.TimerHandle | None:
        """The armed timer, if any (``None`` once closed)."""
        return self._handle

    def __enter__(self) -> IdleWatch:
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("IdleWatch should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._since = self._loop.time()
        self._waiting = True
        if self._handle is None:
            self._arm(self._since + self._timeout_s)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._waiting = False
        if self._expiring:
            self._expiring = False
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def close(self) -> None:
        """Stop watching: cancel the timer. Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        self._when = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if not self._waiting or self._task is None:
            return  # the consumer holds the stream; its next wait arms a new timer
        deadline = self._since + self._timeout_s
        if deadline > self._when:
            self._arm(deadline)  # progress since the timer was armed
            return
        self._expiring = True
        self._task.cancel()
