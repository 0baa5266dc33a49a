"""The fakes' own wire code, checked against the real decoders."""

from __future__ import annotations

from botocore.eventstream import EventStreamBuffer

from tests.fakes.eventstream import encode_event_message, event_frame, exception_frame
from tests.fakes.upstream import (
    DEFAULT_DELTAS,
    cut_after_finish,
    ok,
    silent_after_finish,
    slow,
    split_pieces,
)


def test_encoded_event_message_decodes_with_botocore() -> None:
    frame = encode_event_message({":event-type": "contentBlockDelta", ":message-type": "event"},
                                 b'{"delta":{"text":"hi"}}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame)
    [message] = list(buffer)
    assert message.headers == {":event-type": "contentBlockDelta", ":message-type": "event"}
    assert message.payload == b'{"delta":{"text":"hi"}}'
    assert message.prelude.total_length == len(frame)


def test_frames_split_at_every_byte_still_decode() -> None:
    stream = event_frame("messageStart", {"role": "assistant"}) + exception_frame(
        "throttlingException", "slow down")
    buffer = EventStreamBuffer()
    messages = []
    for piece in split_pieces(stream, sizes=(1,)):
        buffer.add_data(piece)
        messages.extend(buffer)
    assert [m.headers[":message-type"] for m in messages] == ["event", "exception"]
    assert messages[1].headers[":exception-type"] == "throttlingException"
    assert messages[1].to_response_dict()["status_code"] == 400


def test_split_pieces_covers_the_data_in_odd_sizes() -> None:
    data = bytes(range(40))
    pieces = split_pieces(data)
    assert b"".join(pieces) == data
    assert [len(p) for p in pieces][:4] == [1, 3, 7, 2]


def test_behaviours_without_deltas_stream_the_default_answer() -> None:
    """(A slots dataclass has no class-level defaults: ``Reply.deltas`` was a descriptor.)"""
    for reply in (ok(), slow(delay_s=0.1), cut_after_finish(), silent_after_finish()):
        assert reply.deltas == DEFAULT_DELTAS and reply.text == "Hello, world!"
