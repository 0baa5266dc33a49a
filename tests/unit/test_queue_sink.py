import asyncio

import pytest

from gateway.frames import PongFrame
from gateway.sink import SinkClosed
from gateway.ws import QueueSink


async def test_a_producer_blocked_on_a_full_queue_is_released_when_the_socket_closes() -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
    sink = QueueSink(queue)
    await sink.send(PongFrame())  # fills the queue
    blocked = asyncio.create_task(sink.send(PongFrame()))
    await asyncio.sleep(0)  # let it block on the full queue
    assert not blocked.done()
    sink.close()
    with pytest.raises(SinkClosed):
        await blocked
    with pytest.raises(SinkClosed):
        await sink.send(PongFrame())
    assert queue.qsize() == 1


async def test_a_blocked_producer_proceeds_when_room_frees_up() -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
    sink = QueueSink(queue)
    await sink.send(PongFrame())
    blocked = asyncio.create_task(sink.send(PongFrame()))
    await asyncio.sleep(0)
    assert queue.get_nowait() == b'{"type":"pong"}'
    await blocked
    assert queue.qsize() == 1
