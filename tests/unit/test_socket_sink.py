import asyncio

import pytest

from gateway.frames import PongFrame
from gateway.sink import SinkClosed
from gateway.ws import QueueSink


async def test_a_producer_blocked_on_a_full_queue_is_released_when_the_socket_closes() -> None:
    started: list[asyncio.Queue[bytes]] = []
    sink = QueueSink(1, started.append)
    await sink.send(PongFrame())  # creates the queue (and would start the writer), fills it
    assert started == [sink.queue]
    queue = sink.queue
    blocked = asyncio.create_task(sink.send(PongFrame()))
    await asyncio.sleep(0)  # let it block on the full queue
    assert not blocked.done()
    sink.close()
    with pytest.raises(SinkClosed):
        await blocked
    with pytest.raises(SinkClosed):
        await sink.send(PongFrame())
    assert queue is not None and queue.qsize() == 1


async def test_a_blocked_producer_proceeds_when_room_frees_up() -> None:
    sink = QueueSink(1)
    await sink.send(PongFrame())
    queue = sink.queue
    assert queue is not None
    blocked = asyncio.create_task(sink.send(PongFrame()))
    await asyncio.sleep(0)
    assert queue.get_nowait() == b'{"type":"pong"}'
    await blocked
    assert queue.qsize() == 1


def test_an_idle_sink_has_no_queue() -> None:
    assert QueueSink(8).queue is None
