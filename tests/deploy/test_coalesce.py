"""The coalescing sink, against an in-memory poster and a controlled clock."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from deploy.coalesce import CoalescingSink, DeliveryFailed
from gateway.frames import DeltaFrame, DoneFrame, ErrorFrame, PongFrame, StartFrame
from gateway.sink import SinkClosed


class Poster:
    def __init__(self, *, fail_after: int | None = None, gone: bool = True) -> None:
        self.frames: list[dict[str, object]] = []
        self._fail_after = fail_after
        self._gone = gone

    async def post(self, data: bytes) -> None:
        if self._fail_after is not None and len(self.frames) >= self._fail_after:
            raise DeliveryFailed("nope", gone=self._gone)
        self.frames.append(orjson.loads(data))

    @property
    def kinds(self) -> list[object]:
        return [f["type"] for f in self.frames]


def start() -> StartFrame:
    return StartFrame("c1", "conv", "mock", "m")


def done() -> DoneFrame:
    return DoneFrame("c1", "conv", {"prompt_tokens": 1, "completion_tokens": 2,
                                    "total_tokens": 3}, 0.0, False, "stop")


async def test_a_burst_of_small_deltas_leaves_in_few_posts() -> None:
    poster = Poster()
    sink = CoalescingSink(poster, max_bytes=16, max_delay_s=10)
    await sink.send(start())
    for word in ["one ", "two ", "three ", "four ", "five ", "six "]:
        await sink.send(DeltaFrame("c1", word))
    await sink.send(done())
    await sink.aclose()
    assert poster.kinds == ["start", "delta", "delta", "done"]
    deltas = [f["text"] for f in poster.frames if f["type"] == "delta"]
    assert deltas == ["one two three four ", "five six "]  # 19 >= 16 bytes; then done
    assert sink.posts == 4 and sink.done == done()


async def test_size_bound_counts_utf8_bytes() -> None:
    poster = Poster()
    sink = CoalescingSink(poster, max_bytes=6, max_delay_s=10)
    await sink.send(DeltaFrame("c1", "éé"))  # 4 bytes: held
    assert poster.frames == []
    await sink.send(DeltaFrame("c1", "é"))  # 6 bytes: flushed
    assert poster.frames == [{"type": "delta", "id": "c1", "text": "ééé"}]
    await sink.aclose()


async def test_a_pause_in_the_stream_flushes_on_time() -> None:
    poster = Poster()
    sink = CoalescingSink(poster, max_bytes=1024, max_delay_s=0.02)
    await sink.send(DeltaFrame("c1", "hello"))
    assert poster.frames == []
    await asyncio.sleep(0.06)
    assert poster.frames == [{"type": "delta", "id": "c1", "text": "hello"}]
    await sink.send(DeltaFrame("c1", " again"))
    await asyncio.sleep(0.06)
    assert [f["text"] for f in poster.frames] == ["hello", " again"]
    await sink.aclose()


async def test_time_bound_is_checked_when_a_delta_arrives() -> None:
    now = [0.0]
    poster = Poster()
    sink = CoalescingSink(poster, max_bytes=1024, max_delay_s=60, clock=lambda: now[0])
    await sink.send(DeltaFrame("c1", "a"))
    now[0] = 61.0
    await sink.send(DeltaFrame("c1", "b"))
    assert poster.frames == [{"type": "delta", "id": "c1", "text": "ab"}]
    await sink.aclose()


@pytest.mark.parametrize("frame", [done(), ErrorFrame("c1", "internal", "x"), PongFrame()])
async def test_control_frames_are_not_delayed_and_keep_order(frame: object) -> None:
    poster = Poster()
    sink = CoalescingSink(poster, max_bytes=1024, max_delay_s=60)
    await sink.send(DeltaFrame("c1", "partial"))
    await sink.send(frame)  # type: ignore[arg-type]
    assert poster.kinds == ["delta", frame.type]  # type: ignore[attr-defined]
    await sink.aclose()


async def test_deltas_of_another_chat_flush_the_buffer_first() -> None:
    poster = Poster()
    sink = CoalescingSink(poster, max_bytes=1024, max_delay_s=60)
    await sink.send(DeltaFrame("a", "1"))
    await sink.send(DeltaFrame("b", "2"))
    await sink.flush()
    assert [(f["id"], f["text"]) for f in poster.frames] == [("a", "1"), ("b", "2")]
    await sink.aclose()


async def test_gone_connection_closes_the_sink() -> None:
    poster = Poster(fail_after=1)
    sink = CoalescingSink(poster, max_bytes=1, max_delay_s=60)
    await sink.send(start())
    with pytest.raises(SinkClosed):
        await sink.send(DeltaFrame("c1", "lost"))
    assert sink.failure is not None and sink.failure.gone
    with pytest.raises(SinkClosed):
        await sink.send(done())
    await sink.aclose()


async def test_a_failed_timer_flush_is_raised_by_the_next_send() -> None:
    poster = Poster(fail_after=0, gone=False)
    sink = CoalescingSink(poster, max_bytes=1024, max_delay_s=0.01)
    await sink.send(DeltaFrame("c1", "lost"))
    await asyncio.sleep(0.05)
    assert sink.closed and sink.failure is not None and not sink.failure.gone
    with pytest.raises(SinkClosed):
        await sink.send(DeltaFrame("c1", "more"))
    await sink.aclose()
