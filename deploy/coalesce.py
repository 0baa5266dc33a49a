"""A sink that posts frames to an API Gateway connection, coalescing small deltas.

Every ``post_to_connection`` is an HTTPS request, so one per token would cost more than
the token itself. Deltas of one chat are buffered and posted as one ``delta`` frame
(their texts joined) when the buffer holds ``max_bytes`` of text or its oldest delta
has waited ``max_delay_s``, whichever comes first; a timer covers a stream that pauses.
``start``, ``done``, ``error`` and ``pong`` are never delayed: they flush what is
buffered, then go out at once, so frames keep their order.

Posts are serialised by one lock, so a slow connection holds back the turn's producer
(backpressure) rather than growing a buffer. When the poster reports the connection is
gone (API Gateway's ``GoneException``), or cannot deliver at all, the sink raises
:class:`~gateway.sink.SinkClosed`: the service then cancels upstream and settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from gateway.frames import DeltaFrame, DoneFrame, ServerFrame, encode_frame
from gateway.sink import SinkClosed


class DeliveryFailed(Exception):
    """A frame could not be delivered; ``gone`` when the connection no longer exists."""

    def __init__(self, message: str, *, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone


class FramePoster(Protocol):
    async def post(self, data: bytes) -> None:
        """Deliver one encoded frame to the connection; raise DeliveryFailed."""
        ...


class CoalescingSink:
    def __init__(self, poster: FramePoster, *, max_bytes: int, max_delay_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._poster = poster
        self._max_bytes = max_bytes
        self._max_delay_s = max_delay_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._chat_id: str | None = None
        self._texts: list[str] = []
        self._size = 0
        self._first_at = 0.0
        self._generation = 0
        self._timer: asyncio.Task[None] | None = None
        self.failure: DeliveryFailed | None = None
        self.done: DoneFrame | None = None
        self.posts = 0

    @property
    def closed(self) -> bool:
        return self.failure is not None

    async def send(self, frame: ServerFrame) -> None:
        if self.failure is not None:
            raise SinkClosed()
        if isinstance(frame, DeltaFrame):
            await self._add(frame)
            return
        if isinstance(frame, DoneFrame):
            self.done = frame
        async with self._lock:
            await self._flush_locked()
            await self._post(encode_frame(frame))

    async def flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def aclose(self) -> None:
        """Stop the timer; what is still buffered (only after a failure) is dropped."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer

    async def _add(self, frame: DeltaFrame) -> None:
        async with self._lock:
            if self._chat_id is not None and self._chat_id != frame.id:
                await self._flush_locked()
            if not self._texts:
                self._chat_id, self._first_at = frame.id, self._clock()
                self._timer = asyncio.create_task(self._flush_later(self._generation))
            self._texts.append(frame.text)
            self._size += len(frame.text.encode())
            if (self._size >= self._max_bytes
                    or self._clock() - self._first_at >= self._max_delay_s):
                await self._flush_locked()

    async def _flush_later(self, generation: int) -> None:
        await asyncio.sleep(self._max_delay_s)
        async with self._lock:
            if generation != self._generation or self.failure is not None:
                return
            with contextlib.suppress(SinkClosed):  # recorded; the next send raises
                await self._flush_locked()

    async def _flush_locked(self) -> None:
        if not self._texts:
            return
        assert self._chat_id is not None
        frame = DeltaFrame(self._chat_id, "".join(self._texts))
        self._texts, self._size, self._chat_id = [], 0, None
        self._generation += 1
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()  # asleep or waiting for the lock we hold: nothing lost
        self._timer = None
        await self._post(encode_frame(frame))

    async def _post(self, data: bytes) -> None:
        if self.failure is not None:
            raise SinkClosed()
        try:
            await self._poster.post(data)
        except DeliveryFailed as exc:
            self.failure = exc
            raise SinkClosed() from exc
        self.posts += 1
