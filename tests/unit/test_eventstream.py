"""The AWS event-stream decoder (providers/eventstream.py), against botocore's own parser
and byte by byte."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer

from providers.eventstream import (
    MAX_HEADERS_BYTES,
    EventStreamDecoder,
    MalformedEventStream,
    decode_headers,
)
from tests.fakes.eventstream import (
    event_frame,
    exception_frame,
    raw_event_frame,
)

STREAM = (event_frame("messageStart", {"role": "assistant"})
          + event_frame("contentBlockDelta", {"contentBlockIndex": 0,
                                              "delta": {"text": "Grüße 😀 \" \\n"}})
          + exception_frame("throttlingException", "slow down")
          + raw_event_frame("empty", b"")
          + event_frame("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1}}))


def _botocore(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


def test_messages_match_botocores_reading() -> None:
    decoder = EventStreamDecoder()
    got = [(m.headers, m.payload) for m in decoder.feed(STREAM)]
    assert got == _botocore(STREAM)
    assert len(got) == 5 and decoder.pending == 0
    assert got[1][0][":event-type"] == "contentBlockDelta"
    assert got[3][1] == b""


def _ends(data: bytes) -> list[int]:
    """Where each message of ``data`` ends (its total length leads its prelude)."""
    ends, at = [], 0
    while at < len(data):
        at += struct.unpack_from(">I", data, at)[0]
        ends.append(at)
    return ends


def test_any_split_of_the_bytes_gives_the_same_messages() -> None:
    whole = [tuple(m) for m in EventStreamDecoder().feed(STREAM)]
    ends = _ends(STREAM)
    for cut in range(1, len(STREAM)):
        decoder = EventStreamDecoder()
        first = list(decoder.feed(STREAM[:cut]))
        complete = [end for end in ends if end <= cut]
        assert len(first) == len(complete)
        assert decoder.pending == cut - (complete[-1] if complete else 0)
        rest = list(decoder.feed(STREAM[cut:]))
        assert [tuple(m) for m in first + rest] == whole, cut
        assert decoder.pending == 0
    byte_by_byte = EventStreamDecoder()
    one_at_a_time = [tuple(m) for i in range(len(STREAM))
                     for m in byte_by_byte.feed(STREAM[i:i + 1])]
    assert one_at_a_time == whole


def _header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def test_every_header_type_is_read() -> None:
    an_id = uuid.uuid4().bytes
    raw = (_header("t", 0, b"") + _header("f", 1, b"") + _header("b", 2, b"\xff")
           + _header("s", 3, struct.pack(">h", -2)) + _header("i", 4, struct.pack(">i", 7))
           + _header("l", 5, struct.pack(">q", -2**40))
           + _header("y", 6, struct.pack(">H", 3) + b"\x00\x01\x02")
           + _header("str", 7, struct.pack(">H", 2) + "é".encode())
           + _header("ts", 8, struct.pack(">q", 1_700_000_000_000))
           + _header("id", 9, an_id))
    headers = decode_headers(raw)
    assert headers == {"t": True, "f": False, "b": -1, "s": -2, "i": 7, "l": -2**40,
                       "y": b"\x00\x01\x02", "str": "é", "ts": 1_700_000_000_000,
                       "id": an_id}
    message = _message(raw, b"{}")
    [decoded] = EventStreamDecoder().feed(message)
    assert decoded.headers == headers
    assert _botocore(message)[0][0]["str"] == "é"


def _message(raw_headers: bytes, payload: bytes, *, total: int | None = None) -> bytes:
    """A message around already encoded headers, checksums right (``total`` as given)."""
    size = total if total is not None else 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", size, len(raw_headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize("raw", [
    _header("a", 7, struct.pack(">H", 9) + b"short"),  # runs past the section
    _header("a", 10, b""),  # no such type
    _header("a", 4, b"\x00"),  # an integer cut short
    _header("a", 7, struct.pack(">H", 1) + b"\xff"),  # not UTF-8
    _header("a", 0, b"") + _header("a", 1, b""),  # one name twice
    b"\x05ab",  # a name cut short
], ids=["past-end", "unknown-type", "short-int", "bad-utf8", "duplicate", "short-name"])
def test_a_malformed_header_section_is_refused(raw: bytes) -> None:
    with pytest.raises(MalformedEventStream):
        decode_headers(raw)
    with pytest.raises(MalformedEventStream):
        list(EventStreamDecoder().feed(_message(raw, b"{}")))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


@pytest.mark.parametrize("damage", [
    lambda m: _flip(m, 2),  # the total length: its prelude checksum no longer matches
    lambda m: _flip(m, 9),  # the prelude checksum itself
    lambda m: _flip(m, len(m) - 6),  # the payload: the message checksum no longer matches
    lambda m: _flip(m, len(m) - 1),  # the message checksum itself
    lambda m: _message(b"", b"{}", total=15),  # shorter than a message can be
    lambda m: _message(b"", b"{}", total=16 + MAX_HEADERS_BYTES + 25 * 1024 * 1024),
], ids=["length", "prelude-crc", "payload", "message-crc", "too-short", "too-long"])
def test_damaged_messages_are_refused_not_skipped(damage: object) -> None:
    good = event_frame("contentBlockDelta", {"delta": {"text": "x"}})
    bad = damage(good)  # type: ignore[operator]
    had = []
    with pytest.raises(MalformedEventStream):
        for message in EventStreamDecoder().feed(good + bad + good):
            had.append(message)
    assert len(had) == 1  # the message before the damage was had; none after it


def test_a_large_message_in_many_reads_comes_whole() -> None:
    payload = bytes(range(256)) * 800  # 200 KiB
    message = raw_event_frame("big", payload)
    decoder, got, fed = EventStreamDecoder(), [], 0
    for reads, at in enumerate(range(0, len(message), 1000), start=1):
        piece = message[at:at + 1000]
        got += decoder.feed(piece)
        fed += len(piece)
        assert decoder.pending == (fed if fed < len(message) else 0)
        if fed < len(message):  # kept as they came, not joined again at every read
            assert len(decoder._held) == reads
    [whole] = got
    assert whole.payload == payload and whole.headers[":event-type"] == "big"
