"""A scripted, recording fake model provider: the parts every wire format shares.

A :class:`FakeUpstream` is a real aiohttp app on loopback. Each request it receives is
recorded (:attr:`FakeUpstream.requests`) and answered by the next scripted behaviour
(:meth:`FakeUpstream.script`), or by :attr:`FakeUpstream.default` once the script is used
up. A :class:`WireFormat` (OpenAI SSE, Anthropic SSE, Bedrock event stream) turns a
behaviour into bytes; this module drives the timing: odd-sized writes, pauses, aborted
connections, hangs, and noticing when the client goes away.

Behaviours (build them with the functions below):
    ok("Hel", "lo")                   stream these text deltas, then the finish and the
                                      trailer (the usage some wires send after it, the
                                      last event)
    slow("a", "b", delay_s=0.2)       the same with a pause before each delta but the first
    fail_after(3)                     three deltas, then the connection is aborted
    end_after(3)                      three deltas, then the body ends cleanly, unfinished
    error_after(2, kind="overloaded") two deltas, then the wire's in-stream error event
    cut_after_finish()                the answer and its finish, then the connection aborted
    silent_after_finish()             the answer and its finish, then nothing (for at most
                                      HANG_MAX_S, then the body ends without the trailer)
    status(429, retry_after=0.05)     an HTTP error response in the wire's error shape
    hang_before_first_token()         headers sent, then nothing until the client leaves
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import web
from aiohttp.test_utils import TestServer

FinishKind = Literal["stop", "length"]
ErrorKind = Literal["overloaded", "rate_limited", "internal", "bad_request"]
# Sizes of the pieces each frame is written in: splits land inside JSON, inside
# ``data:`` prefixes, between ``\r``/``\n`` and inside event-stream preludes.
SPLIT_SIZES = (1, 3, 7, 2, 11, 5, 17)
POLL_S = 0.005
DEFAULT_DELTAS = ("Hello", ", ", "world", "!")
HANG_MAX_S = 30.0  # how long a hang lasts at most, the client still there


@dataclass(frozen=True, slots=True)
class Reply:
    """A streamed answer. ``cut_after`` deltas in, the stream is aborted, errors or ends
    (``cut``); else, after the deltas and the finish, ``after_finish`` says what follows:
    the trailer, an abort, or a hang. ``complete_response`` (``stream: false``) knows
    neither."""

    deltas: tuple[str, ...] = DEFAULT_DELTAS
    usage: tuple[int, int] | None = None  # (prompt, completion); default (11, len(deltas))
    finish: FinishKind = "stop"
    delay_s: float = 0.0
    cut_after: int | None = None
    cut: Literal["abort", "error", "end"] = "abort"
    error: ErrorKind = "overloaded"
    after_finish: Literal["trailer", "abort", "hang"] = "trailer"  # what follows the finish

    @property
    def prompt_tokens(self) -> int:
        return self.usage[0] if self.usage else 11

    @property
    def completion_tokens(self) -> int:
        return self.usage[1] if self.usage else len(self.deltas)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


@dataclass(frozen=True, slots=True)
class Status:
    """An HTTP error answer; ``error_code`` overrides the wire's default code name."""

    code: int
    retry_after: float | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class Hang:
    """Never answer (``headers=True``: after sending a 200's headers) until the client leaves."""

    headers: bool = True
    max_s: float = HANG_MAX_S


Behaviour = Reply | Status | Hang


def ok(*deltas: str, usage: tuple[int, int] | None = None, finish: FinishKind = "stop") -> Reply:
    return Reply(deltas=deltas or DEFAULT_DELTAS, usage=usage, finish=finish)


def slow(*deltas: str, delay_s: float) -> Reply:
    return Reply(deltas=deltas or DEFAULT_DELTAS, delay_s=delay_s)


def fail_after(n_deltas: int, *deltas: str) -> Reply:
    return Reply(deltas=deltas or tuple(f"part{i} " for i in range(n_deltas + 3)),
                 cut_after=n_deltas, cut="abort")


def end_after(n_deltas: int, *deltas: str) -> Reply:
    return Reply(deltas=deltas or tuple(f"part{i} " for i in range(n_deltas + 3)),
                 cut_after=n_deltas, cut="end")


def error_after(n_deltas: int, *deltas: str, kind: ErrorKind = "overloaded") -> Reply:
    return Reply(deltas=deltas or tuple(f"part{i} " for i in range(n_deltas + 3)),
                 cut_after=n_deltas, cut="error", error=kind)


def cut_after_finish(*deltas: str) -> Reply:
    """The answer and its finish, then the connection aborted (no usage after the finish,
    no last event)."""
    return Reply(deltas=deltas or DEFAULT_DELTAS, after_finish="abort")


def silent_after_finish(*deltas: str) -> Reply:
    """The answer and its finish, then nothing until the client leaves (or HANG_MAX_S has
    passed: then the body ends, without the trailer)."""
    return Reply(deltas=deltas or DEFAULT_DELTAS, after_finish="hang")


def status(code: int, *, retry_after: float | None = None, error_code: str | None = None
           ) -> Status:
    return Status(code=code, retry_after=retry_after, error_code=error_code)


def hang_before_first_token(*, headers: bool = True) -> Hang:
    return Hang(headers=headers)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    match_info: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any
    received_at: float


class WireFormat(Protocol):
    """How one provider's API looks on the wire (see the ``*_server`` modules)."""

    content_type: str

    def routes(self, handler: Any) -> list[web.RouteDef]: ...

    def is_streaming(self, call: RecordedRequest) -> bool: ...

    def opening(self, call: RecordedRequest, reply: Reply) -> bytes: ...

    def delta(self, call: RecordedRequest, index: int, text: str) -> bytes: ...

    def finishing(self, call: RecordedRequest, reply: Reply) -> bytes:
        """The closing events up to the one that carries the stop reason."""
        ...

    def trailer(self, call: RecordedRequest, reply: Reply) -> bytes:
        """What follows the finish: the usage the wire reports there, the last event."""
        ...

    def stream_error(self, call: RecordedRequest, kind: ErrorKind) -> bytes: ...

    def error_response(self, answer: Status) -> web.Response: ...

    def complete_response(self, call: RecordedRequest, reply: Reply) -> web.Response: ...


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


def split_pieces(data: bytes, sizes: Iterable[int] = SPLIT_SIZES) -> list[bytes]:
    pieces, offset = [], 0
    for size in itertools.cycle(sizes):
        if offset >= len(data):
            return pieces
        pieces.append(data[offset:offset + size])
        offset += size
    return pieces


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@dataclass
class _Writer:
    request: web.Request
    response: web.StreamResponse
    split: bool

    async def send(self, data: bytes) -> None:
        for piece in split_pieces(data) if self.split else [data]:
            if _client_left(self.request):
                raise ClientGone
            try:
                await self.response.write(piece)
            except ConnectionError as exc:
                raise ClientGone from exc
            await asyncio.sleep(0)

    async def pause(self, seconds: float) -> None:
        await wait_while_connected(self.request, seconds)


async def wait_while_connected(request: web.Request, seconds: float) -> None:
    """Sleep up to ``seconds``, polling the transport; raise ClientGone when it closes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _client_left(request):
            raise ClientGone
        await asyncio.sleep(POLL_S)


@dataclass
class FakeUpstream:
    """One fake provider server: scripted answers, recorded requests and disconnects."""

    wire: WireFormat
    split: bool = True
    default: Behaviour = field(default_factory=Reply)
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    url: str = ""
    _queue: deque[Behaviour] = field(default_factory=deque)
    _disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def script(self, *behaviours: Behaviour) -> None:
        """Queue answers for the next requests, in order; then ``default`` answers."""
        self._queue.extend(behaviours)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    async def wait_for_disconnect(self, within_s: float = 1.0) -> float:
        """Wait (bounded) until a client closed a connection mid-answer; its time."""
        async with asyncio.timeout(within_s):
            await self._disconnected.wait()
        return self.disconnects[0]

    async def wait_for_requests(self, count: int = 1, within_s: float = 1.0) -> None:
        """Wait (bounded) until at least ``count`` requests have arrived."""
        async with asyncio.timeout(within_s):
            while self.request_count < count:
                self._arrived.clear()
                await self._arrived.wait()

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.wire.routes(self._handle))
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        call = RecordedRequest(request.method, request.path, dict(request.match_info),
                               {k.lower(): v for k, v in request.headers.items()},
                               json.loads(raw) if raw else None,
                               time.monotonic())
        self.requests.append(call)
        self._arrived.set()
        behaviour = self._queue.popleft() if self._queue else self.default
        try:
            return await self._answer(request, call, behaviour)
        except ClientGone:
            self._note_disconnect()
            return web.Response(status=499)
        except asyncio.CancelledError:  # the test server cancels handlers on disconnect
            self._note_disconnect()
            raise

    def _note_disconnect(self) -> None:
        self.disconnects.append(time.monotonic())
        self._disconnected.set()

    async def _answer(self, request: web.Request, call: RecordedRequest,
                      behaviour: Behaviour) -> web.StreamResponse:
        match behaviour:
            case Status():
                return self.wire.error_response(behaviour)
            case Hang(headers=headers, max_s=max_s):
                response = await self._start(request) if headers else web.Response(status=504)
                await wait_while_connected(request, max_s)
                return response
            case Reply() if not self.wire.is_streaming(call):
                return self.wire.complete_response(call, behaviour)
            case Reply():
                return await self._stream(request, call, behaviour)

    async def _start(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": self.wire.content_type})
        await response.prepare(request)
        return response

    async def _stream(self, request: web.Request, call: RecordedRequest,
                      reply: Reply) -> web.StreamResponse:
        response = await self._start(request)
        writer = _Writer(request, response, self.split)
        await writer.send(self.wire.opening(call, reply))
        for index, text in enumerate(reply.deltas):
            if index == reply.cut_after:
                return await self._cut(request, call, reply, writer)
            if index and reply.delay_s:
                await writer.pause(reply.delay_s)
            await writer.send(self.wire.delta(call, index, text))
        await writer.send(self.wire.finishing(call, reply))
        if reply.after_finish == "abort" and request.transport is not None:
            request.transport.abort()
            return response
        if reply.after_finish == "hang":
            await wait_while_connected(request, HANG_MAX_S)
            return response
        await writer.send(self.wire.trailer(call, reply))
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request, call: RecordedRequest, reply: Reply,
                   writer: _Writer) -> web.StreamResponse:
        if reply.cut == "error":
            await writer.send(self.wire.stream_error(call, reply.error))
            await writer.response.write_eof()
        elif reply.cut == "end":  # no finish, no closing events: the body just ends
            await writer.response.write_eof()
        elif request.transport is not None:
            request.transport.abort()
        return writer.response


@asynccontextmanager
async def serve(upstream: FakeUpstream) -> AsyncIterator[FakeUpstream]:
    """Run ``upstream`` on a free loopback port; ``upstream.url`` is its root URL."""
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    upstream.url = str(server.make_url("")).rstrip("/")
    try:
        yield upstream
    finally:
        await server.close()


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event (``data`` JSON-encoded unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
