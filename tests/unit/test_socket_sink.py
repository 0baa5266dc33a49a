"""SocketSink: direct writes on an idle socket, a bounded FIFO behind a write in flight."""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.base_protocol import BaseProtocol

from gateway.frames import DeltaFrame
from gateway.sink import SinkClosed
from gateway.ws import SocketSink


def delta(text: str, frame_id: str = "c1") -> DeltaFrame:
    return DeltaFrame(frame_id, text)


def texts(sent: list[bytes]) -> list[str]:
    return [orjson.loads(data)["text"] for data in sent]


class FakeSocket:
    """aiohttp's ``send_frame`` in miniature: the frame is written first, then, while
    ``drained`` is clear, the write waits as for a paused transport."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.error: Exception | None = None
        self.drained = asyncio.Event()
        self.drained.set()
        self.writers: list[asyncio.Task[Any] | None] = []

    async def send_frame(self, message: bytes, opcode: WSMsgType,
                         compress: int | None = None) -> None:
        assert opcode == WSMsgType.TEXT
        if self.error is not None:
            raise self.error
        self.sent.append(message)
        self.writers.append(asyncio.current_task())
        await self.drained.wait()

    def release(self) -> None:
        """Let the writes now waiting go on; later ones wait again."""
        gate, self.drained = self.drained, asyncio.Event()
        gate.set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def stuck_sink(maxsize: int, first_text: str = "0",
                     ) -> tuple[FakeSocket, SocketSink, asyncio.Task[None]]:
    """A sink whose first frame (``first_text``) is written directly and is now stuck
    waiting for the client to drain; the task sending it is returned."""
    ws = FakeSocket()
    sink = SocketSink(ws, maxsize)
    ws.drained.clear()
    first = asyncio.create_task(sink.send(delta(first_text)))
    await settle()
    return ws, sink, first


async def test_an_idle_socket_is_written_from_the_producers_own_task() -> None:
    ws = FakeSocket()
    sink = SocketSink(ws, 4)
    tasks_before = asyncio.all_tasks()
    await sink.send(delta("a"))
    await sink.send(delta("b"))
    assert texts(ws.sent) == ["a", "b"]
    assert ws.writers == [asyncio.current_task()] * 2
    assert asyncio.all_tasks() == tasks_before  # no writer task
    assert not sink.busy and sink.writer is None and sink.backlog == 0


def test_an_idle_sink_has_no_queue_and_no_task() -> None:
    sink = SocketSink(FakeSocket(), 8)
    assert sink.backlog == 0 and sink.writer is None and not sink.busy


async def test_frames_keep_their_order_behind_a_direct_write_blocked_on_drain() -> None:
    ws, sink, first = await stuck_sink(8, "a1")
    assert not first.done() and sink.busy and texts(ws.sent) == ["a1"]
    # Other producers arrive while the write is in flight: queued, they return at once.
    await sink.send(delta("b1", "c2"))
    await sink.send(delta("c1", "c3"))
    assert sink.backlog == 2 and sink.writer is None  # the writer starts after the write
    ws.release()
    await first
    # The backlog went to a writer task, now stalled on "b1"; the producer's next frame
    # queues behind the backlog, never before it.
    assert sink.writer is not None and sink.busy and texts(ws.sent) == ["a1", "b1"]
    await sink.send(delta("a2"))
    assert texts(ws.sent) == ["a1", "b1"] and sink.backlog == 2
    ws.drained.set()
    await settle()
    assert texts(ws.sent) == ["a1", "b1", "c1", "a2"]
    assert ws.writers[0] is first and all(w is not first for w in ws.writers[1:])
    # Backlog drained: the writer is gone and writes are direct again.
    assert sink.writer is None and not sink.busy and sink.backlog == 0
    await sink.send(delta("d1"))
    assert ws.writers[-1] is asyncio.current_task()
    assert texts(ws.sent)[-1] == "d1" and sink.writer is None


async def test_a_writer_blocked_on_drain_keeps_later_frames_queued() -> None:
    ws, sink, first = await stuck_sink(8, "1")
    await sink.send(delta("2"))
    ws.release()
    await first  # the writer task now blocks on "2"
    assert texts(ws.sent) == ["1", "2"] and sink.busy
    await sink.send(delta("3"))  # behind the writer's write, not direct
    assert texts(ws.sent) == ["1", "2"] and sink.backlog == 1
    ws.drained.set()
    await settle()
    assert texts(ws.sent) == ["1", "2", "3"] and not sink.busy


async def test_concurrent_producers_under_random_stalls_keep_send_order() -> None:
    rng = random.Random(7)
    ws = FakeSocket()
    sink = SocketSink(ws, 3)
    issued: list[str] = []

    async def producer(name: str) -> None:
        for i in range(40):
            text = f"{name}{i}"
            issued.append(text)  # send() takes its place in line before it first yields
            await sink.send(delta(text, name))
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    async def stalls() -> None:
        while True:
            ws.drained.clear() if rng.random() < 0.5 else ws.drained.set()
            for _ in range(rng.randrange(1, 6)):
                await asyncio.sleep(0)

    staller = asyncio.create_task(stalls())
    await asyncio.gather(*(producer(name) for name in "abcdef"))
    staller.cancel()
    ws.drained.set()
    await settle()
    assert texts(ws.sent) == issued and len(issued) == 240
    for name in "abcdef":  # each producer's own frames in its order, too
        assert [t for t in texts(ws.sent) if t[0] == name] == [f"{name}{i}" for i in range(40)]
    assert not sink.busy and sink.writer is None and sink.backlog == 0


async def test_a_full_backlog_holds_producers_in_arrival_order() -> None:
    ws, sink, first = await stuck_sink(2)
    await sink.send(delta("1"))
    await sink.send(delta("2"))
    waiting = [asyncio.create_task(sink.send(delta(str(i)))) for i in (3, 4, 5)]
    await settle()
    assert not any(t.done() for t in waiting) and sink.backlog == 2  # bounded
    ws.drained.set()
    await asyncio.gather(first, *waiting)
    await settle()
    assert texts(ws.sent) == [str(i) for i in range(6)]
    assert not sink.busy


async def test_a_producer_waiting_for_room_is_released_when_the_sink_closes() -> None:
    ws, sink, first = await stuck_sink(1)
    await sink.send(delta("1"))
    blocked = asyncio.create_task(sink.send(delta("2")))
    await settle()
    assert not blocked.done()
    sink.close()
    with pytest.raises(SinkClosed):
        await blocked
    with pytest.raises(SinkClosed):
        await sink.send(delta("3"))
    assert sink.backlog == 0  # the backlog is dropped
    ws.drained.set()
    await first  # its frame was already written
    await settle()
    assert texts(ws.sent) == ["0"] and sink.writer is None


async def test_a_cancelled_waiter_withdraws_its_frame() -> None:
    ws, sink, first = await stuck_sink(1)
    await sink.send(delta("1"))
    gone = asyncio.create_task(sink.send(delta("gone")))
    stays = asyncio.create_task(sink.send(delta("2")))
    await settle()
    gone.cancel()
    await settle()
    ws.drained.set()
    await asyncio.gather(first, stays)
    await settle()
    assert gone.cancelled() and texts(ws.sent) == ["0", "1", "2"]


async def test_a_send_to_a_closed_socket_raises_sink_closed() -> None:
    ws = FakeSocket()
    broken: list[bool] = []
    sink = SocketSink(ws, 4, lambda: broken.append(True))
    ws.closed = True
    with pytest.raises(SinkClosed):
        await sink.send(delta("x"))
    assert sink.closed and ws.sent == [] and not sink.busy
    assert broken == []  # already closed: nothing to close


@pytest.mark.parametrize("error", [ConnectionResetError("Cannot write to closing transport"),
                                   RuntimeError("Call .prepare() first"),
                                   ValueError("a fault nobody expected")])
async def test_a_broken_socket_raises_sink_closed_and_releases_everyone(error: Exception
                                                                       ) -> None:
    ws = FakeSocket()
    broken: list[bool] = []
    sink = SocketSink(ws, 1, lambda: broken.append(True))
    ws.error = error
    with pytest.raises(SinkClosed) as raised:
        await sink.send(delta("x"))
    assert raised.value.__cause__ is error
    assert sink.closed and not sink.busy and broken == [True]
    with pytest.raises(SinkClosed):
        await sink.send(delta("y"))
    assert broken == [True]


async def test_a_write_failing_in_the_writer_task_releases_waiting_producers() -> None:
    ws = FakeSocket()
    broken: list[bool] = []
    sink = SocketSink(ws, 1, lambda: broken.append(True))
    ws.drained.clear()
    first = asyncio.create_task(sink.send(delta("0")))
    await settle()
    await sink.send(delta("1"))  # for the writer task
    blocked = asyncio.create_task(sink.send(delta("2")))
    await settle()
    ws.error = ConnectionResetError("gone")
    ws.drained.set()
    await first
    with pytest.raises(SinkClosed):
        await blocked
    await settle()
    assert sink.closed and broken == [True] and texts(ws.sent) == ["0"]
    assert sink.writer is None and not sink.busy


async def test_a_producer_cancelled_mid_write_frees_the_sink() -> None:
    ws, sink, first = await stuck_sink(4)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not sink.busy and sink.writer is None
    ws.drained.set()
    await sink.send(delta("1"))
    assert texts(ws.sent) == ["0", "1"] and ws.writers[-1] is asyncio.current_task()


async def test_a_producer_cancelled_mid_write_hands_the_backlog_to_the_writer() -> None:
    ws, sink, first = await stuck_sink(4)
    await sink.send(delta("1"))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert sink.busy and sink.writer is not None
    await sink.send(delta("2"))  # still behind the backlog
    ws.drained.set()
    await settle()
    assert texts(ws.sent) == ["0", "1", "2"] and not sink.busy


async def test_aclose_stops_a_writer_stuck_on_a_stalled_socket() -> None:
    _, sink, first = await stuck_sink(4)
    await sink.send(delta("1"))
    first.cancel()
    await settle()
    writer = sink.writer
    assert writer is not None and not writer.done()  # stuck draining "1"
    await sink.aclose()
    assert writer.cancelled() and sink.writer is None and sink.closed


# -- against aiohttp's own WebSocketWriter (flow control and compression) -----------------

class FakeTransport:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class WriterSocket:
    """The bit of ``WebSocketResponse`` the sink uses, over a real ``WebSocketWriter``."""

    def __init__(self, writer: WebSocketWriter) -> None:
        self.writer = writer
        self.closed = False

    async def send_frame(self, message: bytes, opcode: WSMsgType,
                         compress: int | None = None) -> None:
        await self.writer.send_frame(message, opcode, compress)


def aiohttp_socket(*, compress: int = 0, limit: int = 2 ** 16
                   ) -> tuple[WriterSocket, FakeTransport, BaseProtocol]:
    transport = FakeTransport()
    protocol = BaseProtocol(asyncio.get_running_loop())
    protocol.transport = transport  # type: ignore[assignment]
    writer = WebSocketWriter(protocol, transport, compress=compress,  # type: ignore[arg-type]
                             limit=limit)
    return WriterSocket(writer), transport, protocol


def parse_frames(wire: bytes, *, compressed: bool) -> list[bytes]:
    """Server frames (unmasked, unfragmented) back to payloads, in wire order."""
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    payloads = []
    while wire:
        first, second = wire[0], wire[1]
        assert first & 0x0F == WSMsgType.TEXT and first & 0x80
        length, offset = second & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(wire[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(wire[2:10], "big"), 10
        payload, wire = wire[offset:offset + length], wire[offset + length:]
        if first & 0x40:
            assert compressed
            payload = inflate.decompress(payload + b"\x00\x00\xff\xff")
        payloads.append(payload)
    return payloads


async def test_with_aiohttp_a_paused_transport_blocks_the_direct_write_after_writing() -> None:
    ws, transport, protocol = aiohttp_socket(limit=1)  # drain after every frame
    sink = SocketSink(ws, 8)
    protocol.pause_writing()
    first = asyncio.create_task(sink.send(delta("a")))
    await settle()
    assert not first.done() and len(parse_frames(b"".join(transport.chunks),
                                                 compressed=False)) == 1
    await sink.send(delta("b"))
    await sink.send(delta("c"))
    protocol.resume_writing()
    await first
    await settle()
    assert texts(parse_frames(b"".join(transport.chunks), compressed=False)) == ["a", "b", "c"]
    assert not sink.busy and sink.writer is None


@pytest.mark.parametrize("small_while_in_flight", [True, False])
async def test_with_aiohttp_cancelling_a_large_compressed_write_keeps_the_order(
        small_while_in_flight: bool) -> None:
    ws, transport, _ = aiohttp_socket(compress=15)
    sink = SocketSink(ws, 8)
    big = "x" * 40_000 + "".join(random.Random(1).choice("abcdef") for _ in range(20_000))
    first = asyncio.create_task(sink.send(delta(big)))
    await asyncio.sleep(0)  # compressing in the executor, aiohttp's send task scheduled
    assert not first.done() and transport.chunks == []
    if small_while_in_flight:
        await sink.send(delta("small"))
        first.cancel()
    else:
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not sink.busy
        await sink.send(delta("small"))  # direct: waits on aiohttp's send lock
    for _ in range(200):
        await asyncio.sleep(0.005)
        if len(parse_frames(b"".join(transport.chunks), compressed=True)) == 2:
            break
    frames = parse_frames(b"".join(transport.chunks), compressed=True)
    assert texts(frames) == [big, "small"]
    assert first.cancelled() and not sink.busy
