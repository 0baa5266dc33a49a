"""The WebSocket transport: ``/v1/ws``.

The upgrade is authenticated first (401 before any frame). Each ``chat`` frame runs as
its own task through the :class:`ChatService`, so several chats share one socket; their
frames are multiplexed through one bounded outbound queue drained by a single writer
(a slow client slows its own producers instead of growing memory). A bad frame gets one
``error`` frame and the socket stays open; closing the socket cancels every turn in
flight, and each of them settles its budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from gateway.auth import Principal, TokenVerifier, token_from_request
from gateway.config import Limits
from gateway.errors import GatewayError, InvalidRequest, RateLimited
from gateway.frames import (
    CancelFrame,
    ChatFrame,
    ErrorFrame,
    FrameError,
    PingFrame,
    PongFrame,
    ServerFrame,
    encode_frame,
    parse_client_frame,
)
from gateway.service import ChatService, TurnControl, TurnState
from gateway.sink import SinkClosed

log = structlog.get_logger("chatgate.ws")
# Frames beyond this are refused by aiohttp itself (close 1009); below it, frames larger
# than ``Limits.max_frame_bytes`` get an error frame and the socket stays open.
HARD_FRAME_LIMIT_FACTOR = 16


class QueueSink:
    """A sink onto a connection's bounded outbound queue.

    A producer waiting for room in a full queue is released (``SinkClosed``) the moment
    the connection closes, so a dead writer can never strand a turn. The queue (and,
    through ``on_first_frame``, the socket's writer task) is created with the first frame:
    an idle socket costs neither."""

    __slots__ = ("_closed", "_maxsize", "_on_first_frame", "queue")

    def __init__(self, maxsize: int,
                 on_first_frame: Callable[[asyncio.Queue[bytes]], None] | None = None) -> None:
        self._maxsize = maxsize
        self._on_first_frame = on_first_frame
        self.queue: asyncio.Queue[bytes] | None = None
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()

    async def send(self, frame: ServerFrame) -> None:
        if self.closed:
            raise SinkClosed()
        data = encode_frame(frame)
        queue = self.queue
        if queue is None:
            queue = self.queue = asyncio.Queue(self._maxsize)
            if self._on_first_frame is not None:
                self._on_first_frame(queue)
        try:
            queue.put_nowait(data)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(queue.put(data))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({put, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            raise SinkClosed()


class WebSocketSession:
    """One authenticated socket: reads frames, runs chats, writes frames."""

    __slots__ = ("_inflight", "_limits", "_principal", "_service", "_sink", "_writer", "_ws")

    def __init__(self, ws: web.WebSocketResponse, service: ChatService, principal: Principal,
                 limits: Limits) -> None:
        self._ws = ws
        self._service = service
        self._principal = principal
        self._limits = limits
        self._sink = QueueSink(limits.outbound_queue_frames, self._start_writer)
        self._writer: asyncio.Task[None] | None = None
        self._inflight: dict[str, tuple[asyncio.Task[TurnState], TurnControl]] = {}

    def _start_writer(self, queue: asyncio.Queue[bytes]) -> None:
        self._writer = asyncio.create_task(self._write_loop(queue))

    async def run(self) -> None:
        try:
            async for message in self._ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(message.data, binary=message.type == WSMsgType.BINARY)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self._sink.close()
            await self._cancel_all()
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer

    async def _write_loop(self, queue: asyncio.Queue[bytes]) -> None:
        try:
            while not self._ws.closed:
                data = await queue.get()
                await self._ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            pass
        # The client is gone: release waiting producers and end the reader loop too.
        self._sink.close()
        if not self._ws.closed:
            await self._ws.close(code=WSCloseCode.ABNORMAL_CLOSURE)

    async def _on_frame(self, data: bytes | str, *, binary: bool) -> None:
        try:
            if binary:
                raise FrameError("binary frames are not supported: send JSON text frames")
            if len(data) > self._limits.max_frame_bytes:
                raise FrameError(f"frame larger than {self._limits.max_frame_bytes} bytes")
            frame = parse_client_frame(data, max_message_chars=self._limits.max_message_chars)
        except FrameError as exc:
            await self._send_error(exc.frame_id, exc)
            return
        match frame:
            case ChatFrame():
                await self._start_chat(frame)
            case CancelFrame(id=frame_id):
                if frame_id in self._inflight:
                    self._inflight[frame_id][1].cancel()
            case PingFrame():
                with contextlib.suppress(SinkClosed):
                    await self._sink.send(PongFrame())

    async def _start_chat(self, frame: ChatFrame) -> None:
        if frame.id in self._inflight:
            # Not under the live chat's id: its stream goes on and must stay unambiguous.
            await self._send_error(None, InvalidRequest(
                f"chat {frame.id!r} is already in flight on this socket",
                duplicate_id=frame.id))
            return
        if len(self._inflight) >= self._limits.max_chats_per_socket:
            await self._send_error(frame.id, RateLimited(
                f"at most {self._limits.max_chats_per_socket} chats in flight per socket",
                retry_after_ms=100))
            return
        control = TurnControl()
        task = asyncio.create_task(self._service.chat(self._principal, frame, self._sink,
                                                      control))
        self._inflight[frame.id] = (task, control)
        task.add_done_callback(functools.partial(self._forget, frame.id))

    def _forget(self, frame_id: str, _task: asyncio.Task[TurnState]) -> None:
        self._inflight.pop(frame_id, None)

    async def _send_error(self, frame_id: str | None, error: GatewayError) -> None:
        with contextlib.suppress(SinkClosed):
            await self._sink.send(ErrorFrame.from_error(frame_id, error))

    async def _cancel_all(self) -> None:
        tasks = [task for task, _ in self._inflight.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def open_session(request: web.Request, *, service: ChatService, verifier: TokenVerifier,
                       limits: Limits, registry: weakref.WeakSet[web.WebSocketResponse]
                       ) -> web.WebSocketResponse:
    """Authenticate (``Unauthorized`` becomes a 401 before any upgrade), then serve.

    Open sockets are kept in ``registry`` so that shutdown can close them (1001)."""
    principal = await verifier.verify_async(token_from_request(request, allow_query=True))
    ws = web.WebSocketResponse(
        heartbeat=limits.heartbeat_s, decode_text=False,
        max_msg_size=limits.max_frame_bytes * HARD_FRAME_LIMIT_FACTOR,
    )
    await ws.prepare(request)
    registry.add(ws)
    structlog.contextvars.bind_contextvars(brand=principal.brand, user=principal.user_id)
    await WebSocketSession(ws, service, principal, limits).run()
    return ws


async def close_all(registry: weakref.WeakSet[web.WebSocketResponse]) -> None:
    """Graceful shutdown: tell every client we are going away."""
    for ws in list(registry):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
