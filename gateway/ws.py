"""The WebSocket transport: ``/v1/ws``.

The upgrade is authenticated first (401 before any frame). Each ``chat`` frame runs as
its own task through the :class:`ChatService`, so several chats share one socket; their
frames go out in order through one :class:`SocketSink`: written straight from the
producer's task while the socket is idle, queued (bounded) behind a write in flight and
drained by a writer task that exists only while there is a backlog (a slow client slows
its own producers instead of growing memory). A bad frame gets one ``error`` frame and the
socket stays open; closing the socket cancels every turn in flight, and each of them
settles its budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from gateway.auth import Principal, token_from_request
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
from gateway.http_errors import error_response
from gateway.runtime import RUNTIME_KEY
from gateway.service import ChatService, TurnControl, TurnState
from gateway.sink import SinkClosed

log = structlog.get_logger("chatgate.ws")
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
# Frames beyond this are refused by aiohttp itself (close 1009); below it, frames larger
# than ``Limits.max_frame_bytes`` get an error frame and the socket stays open.
HARD_FRAME_LIMIT_FACTOR = 16


class FrameSocket(Protocol):
    """What a :class:`SocketSink` uses of aiohttp's ``WebSocketResponse``."""

    @property
    def closed(self) -> bool: ...

    async def send_frame(self, message: bytes, opcode: WSMsgType,
                         compress: int | None = None) -> None: ...


class SocketSink:
    """A sink that writes one socket's frames in the order they are sent.

    When the socket is idle (no write in flight, nothing queued) the producer writes its
    frame itself, in its own task: aiohttp puts the frame on the transport and returns
    without yielding, unless it must drain a paused transport (after writing) or, with
    compression, compress a large frame in the executor. Frames sent while a write is in
    flight join a bounded FIFO of ``maxsize`` frames, drained by a writer task that is
    started then and ends once the FIFO is empty, after which producers write directly
    again; when the FIFO is full, producers wait for room in arrival order, so a slow
    client slows its own producers instead of growing memory.

    A producer waiting for room is released (``SinkClosed``) the moment the sink closes. A
    write that fails (the socket is closed or broken) closes the sink, calls
    ``on_broken`` once and raises ``SinkClosed`` in the producer. A producer cancelled
    during its own write frees the sink (a backlog goes to the writer task) without
    corrupting the stream or reordering it (see ``_pass_turn``). An idle sink holds
    neither a queue nor a task."""

    __slots__ = ("_busy", "_closed", "_maxsize", "_on_broken", "_pending", "_waiters",
                 "_writer", "_ws")

    def __init__(self, ws: FrameSocket, maxsize: int,
                 on_broken: Callable[[], None] | None = None) -> None:
        self._ws = ws
        self._maxsize = maxsize
        self._on_broken = on_broken
        self._closed = False
        # The write turn is taken: a producer's direct write or the writer task is in
        # flight. While it is free, nothing is pending and nobody waits for room.
        self._busy = False
        # Frames accepted behind the write in flight (at most ``maxsize``), and producers
        # waiting for room with their frame; both created on the first backlog.
        self._pending: deque[bytes] | None = None
        self._waiters: deque[tuple[bytes, asyncio.Future[None]]] | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        """A write is in flight (a producer's own or the writer task's)."""
        return self._busy

    @property
    def backlog(self) -> int:
        """Frames accepted but not yet handed to the socket."""
        return len(self._pending) if self._pending is not None else 0

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The writer task, while there is a backlog to drain."""
        return self._writer

    def close(self) -> None:
        """Drop the backlog and release every producer waiting for room."""
        if self._closed:
            return
        self._closed = True
        if self._pending is not None:
            self._pending.clear()
        if self._waiters is not None:
            for _, room in self._waiters:
                if not room.done():
                    room.set_result(None)
            self._waiters.clear()

    async def aclose(self) -> None:
        """Close, then stop the writer task (it may be waiting on a stalled socket)."""
        self.close()
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.wait({writer})

    async def send(self, frame: ServerFrame) -> None:
        if self._closed:
            raise SinkClosed()
        data = encode_frame(frame)
        if not self._busy:
            self._busy = True
            try:
                await self._write(data)
            finally:
                self._pass_turn()
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        if len(pending) < self._maxsize and not self._waiters:
            pending.append(data)
            return
        await self._wait_for_room(data)

    async def _write(self, data: bytes) -> None:
        """One frame onto the socket; a socket that cannot take it closes the sink."""
        if self._ws.closed:
            self.close()
            raise SinkClosed()
        try:
            await self._ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError) as exc:
            self._break()
            raise SinkClosed() from exc
        except Exception as exc:
            log.exception("ws_send_failed")
            self._break()
            raise SinkClosed() from exc

    def _break(self) -> None:
        if self._closed:
            return
        self.close()
        if self._on_broken is not None:
            self._on_broken()

    def _pass_turn(self) -> None:
        """After a direct write (done, failed or cancelled): hand a backlog to the writer.

        A producer cancelled mid-write leaves no half frame and nothing that a later frame
        could overtake: aiohttp writes a frame whole (one ``transport.write``, or two with
        no await between) before it awaits the drain, and a frame it compresses in the
        executor goes to its own shielded task, scheduled before the cancelled producer
        can run again, which takes aiohttp's send lock (FIFO) before any later frame asks
        for it."""
        if self._pending and not self._closed:
            self._writer = asyncio.create_task(self._drain())  # the turn stays taken
        else:
            self._busy = False

    async def _wait_for_room(self, data: bytes) -> None:
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = deque()
        room = asyncio.get_running_loop().create_future()
        entry = (data, room)
        waiters.append(entry)
        try:
            await room
        except asyncio.CancelledError:
            # Not yet admitted: withdraw the frame. (Admitted already: it will be sent.)
            with contextlib.suppress(ValueError):
                waiters.remove(entry)
            raise
        if self._closed:
            raise SinkClosed()

    async def _drain(self) -> None:
        """The writer task: write the backlog in order, admitting waiters as room frees."""
        pending = self._pending
        assert pending is not None
        try:
            while pending and not self._closed:
                data = pending.popleft()
                waiters = self._waiters
                while waiters:
                    waiting, room = waiters.popleft()
                    if not room.done():
                        pending.append(waiting)
                        room.set_result(None)
                        break
                await self._write(data)
        except SinkClosed:
            pass
        finally:
            self._writer = None
            self._busy = False
            if pending and not self._closed:
                # Stopped from outside with frames left: later frames would overtake them.
                self._break()
            self._pending = self._waiters = None


class WebSocketSession:
    """One authenticated socket: reads frames, runs chats, writes frames (through its
    :class:`SocketSink`); a failed write closes the socket (1006)."""

    __slots__ = ("_closer", "_inflight", "_limits", "_principal", "_service", "_sink", "_ws")

    def __init__(self, ws: web.WebSocketResponse, service: ChatService, principal: Principal,
                 limits: Limits) -> None:
        self._ws = ws
        self._service = service
        self._principal = principal
        self._limits = limits
        self._sink = SocketSink(ws, limits.outbound_queue_frames, self._on_broken)
        self._closer: asyncio.Task[bool] | None = None
        self._inflight: dict[str, tuple[asyncio.Task[TurnState], TurnControl]] | None = None

    def _on_broken(self) -> None:
        # The client is gone: closing the socket also ends the reader loop. Its own task,
        # not the producer's: the producer gets SinkClosed at once.
        if self._closer is None and not self._ws.closed:
            self._closer = asyncio.create_task(
                self._ws.close(code=WSCloseCode.ABNORMAL_CLOSURE))

    async def on_message(self, message: WSMessage) -> bool:
        """Handle one incoming message; False once the socket is closing."""
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await self._on_frame(message.data, binary=message.type == WSMsgType.BINARY)
            return True
        return message.type not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                    WSMsgType.ERROR)

    async def close(self) -> None:
        """The socket is done: cancel its chats (each settles its budget), flush, close."""
        self._sink.close()
        await self._cancel_all()
        await self._sink.aclose()
        if self._closer is not None:
            # Nearly done: the reader loop it ended has marked the socket closing.
            with contextlib.suppress(Exception):
                await self._closer

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
                if self._inflight and frame_id in self._inflight:
                    self._inflight[frame_id][1].cancel()
            case PingFrame():
                with contextlib.suppress(SinkClosed):
                    await self._sink.send(PongFrame())

    async def _start_chat(self, frame: ChatFrame) -> None:
        if self._inflight is None:  # made with the first chat: an idle socket has none
            self._inflight = {}
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
        task = asyncio.create_task(self._chat(frame, control))
        self._inflight[frame.id] = (task, control)
        task.add_done_callback(functools.partial(self._forget, frame.id))

    async def _chat(self, frame: ChatFrame, control: TurnControl) -> TurnState:
        # Bound in the turn's own task (a copy of the context): every log line of the turn
        # names its brand and user, and an idle socket carries no bindings.
        structlog.contextvars.bind_contextvars(brand=self._principal.brand,
                                               user=self._principal.user_id)
        return await self._service.chat(self._principal, frame, self._sink, control)

    def _forget(self, frame_id: str, _task: asyncio.Task[TurnState]) -> None:
        if self._inflight is not None:
            self._inflight.pop(frame_id, None)

    async def _send_error(self, frame_id: str | None, error: GatewayError) -> None:
        with contextlib.suppress(SinkClosed):
            await self._sink.send(ErrorFrame.from_error(frame_id, error))

    async def _cancel_all(self) -> None:
        tasks = [task for task, _ in (self._inflight or {}).values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def websocket(request: web.Request) -> web.StreamResponse:
    """The ``/v1/ws`` handler: authenticate (``Unauthorized`` becomes a 401 before any
    upgrade), then serve the socket until it closes.

    Open sockets are kept in the app's ``SOCKETS`` so that shutdown can close them (1001).
    The handler is the session's only frame besides aiohttp's: an idle socket costs little."""
    runtime = request.app[RUNTIME_KEY]
    try:
        principal = await runtime.verifier.verify_async(
            token_from_request(request, allow_query=True))
    except GatewayError as exc:  # 401 (JSON, OpenAI's error shape) before any upgrade
        return error_response(exc)
    limits = runtime.config.limits
    ws = web.WebSocketResponse(
        heartbeat=limits.heartbeat_s, decode_text=False,
        max_msg_size=limits.max_frame_bytes * HARD_FRAME_LIMIT_FACTOR,
    )
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    session = WebSocketSession(ws, runtime.service, principal, limits)
    try:  # the reader loop lives in this frame: one coroutine frame per socket
        while await session.on_message(await ws.receive()):
            pass
    finally:
        await session.close()
    return ws


async def close_all(registry: weakref.WeakSet[web.WebSocketResponse]) -> None:
    """Graceful shutdown: tell every client we are going away."""
    for ws in list(registry):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
