"""AWS event-stream messages (``application/vnd.amazon.eventstream``) out of a byte stream.

What Bedrock's ``ConverseStream`` answers with. A message is a prelude (total length,
headers length, both big-endian uint32) and its CRC32, the headers, the payload, and the
CRC32 of everything before it. Both checksums are verified, the lengths bounded as botocore
bounds them, and every header type decoded (Bedrock sends strings; the others are read so
that none is misparsed). botocore's own parser builds several objects and parses the
payload against the service model for every event: most of the per-event CPU of a Bedrock
answer, which cost about 2.4 times the OpenAI provider's in all (``bench/provider_cpu.py``;
botocore's 10-connection pool and aiohttp's per-read timer were the rest). This one keeps
the payload as bytes for the caller's JSON decoder.

Anything malformed raises :class:`MalformedEventStream`; nothing is skipped over.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

PRELUDE_BYTES = 12  # total length, headers length, prelude CRC
MAX_HEADERS_BYTES = 128 * 1024  # botocore's bounds
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024

_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
# Header value types (after the name): 0 true, 1 false, fixed-size integers and timestamps,
# 6 bytes and 7 string (a uint16 length first), 9 UUID.
_FIXED = {2: struct.Struct(">b"), 3: struct.Struct(">h"), 4: struct.Struct(">i"),
          5: struct.Struct(">q"), 8: struct.Struct(">q")}
_BYTES, _STRING, _UUID = 6, 7, 9

HeaderValue = bool | int | bytes | str


class MalformedEventStream(ValueError):
    """The bytes are not a valid event stream (a bad checksum, length or header)."""


class EventMessage(NamedTuple):
    headers: dict[str, HeaderValue]
    payload: bytes


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    """A message's headers section, name by name (a name given twice is malformed)."""
    headers: dict[str, HeaderValue] = {}
    at, end = 0, len(data)
    try:
        while at < end:
            size = data[at]
            name = data[at + 1:at + 1 + size].decode()
            at += 1 + size
            kind = data[at]
            at += 1
            value: HeaderValue
            if kind in (_STRING, _BYTES):
                (size,) = _U16.unpack_from(data, at)
                raw = data[at + 2:at + 2 + size]
                at += 2 + size
                value = raw.decode() if kind == _STRING else raw
            elif kind <= 1:
                value = kind == 0
            elif kind == _UUID:
                value = data[at:at + 16]
                at += 16
            else:
                fixed = _FIXED[kind]
                (value,) = fixed.unpack_from(data, at)
                at += fixed.size
            if at > end:
                raise MalformedEventStream("a header runs past the headers section")
            if name in headers:
                raise MalformedEventStream(f"header {name!r} given twice")
            headers[name] = value
    except (IndexError, KeyError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedEventStream(f"unreadable header: {exc}") from None
    return headers


class EventStreamDecoder:
    """Feed it the body's bytes as they arrive; it yields the messages they complete."""

    __slots__ = ("_held", "_held_bytes", "_needed")

    def __init__(self) -> None:
        # The bytes of a message not yet complete, as they came (joined once enough are
        # here: a large message in many reads is copied once, not once a read).
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._needed = PRELUDE_BYTES  # held bytes worth looking at again

    @property
    def pending(self) -> int:
        """Bytes held of a message not yet complete (a body ending with some is cut)."""
        return self._held_bytes

    def feed(self, chunk: bytes) -> Iterator[EventMessage]:
        """The messages ``chunk`` completes, one by one: those before a malformed one are
        had before it raises. Iterate it to its end (the bytes of a message not yet
        complete are kept then for the next feed)."""
        if self._held:
            self._held.append(chunk)
            self._held_bytes += len(chunk)
            if self._held_bytes < self._needed:
                return
            data = b"".join(self._held)
        else:
            data = chunk
        at, size, needed = 0, len(data), PRELUDE_BYTES
        try:
            while size - at >= PRELUDE_BYTES:
                total, headers_size, prelude_crc = _PRELUDE.unpack_from(data, at)
                if zlib.crc32(data[at:at + 8]) != prelude_crc:
                    raise MalformedEventStream("prelude checksum mismatch")
                payload_size = total - PRELUDE_BYTES - headers_size - 4
                if headers_size > MAX_HEADERS_BYTES or payload_size > MAX_PAYLOAD_BYTES \
                        or payload_size < 0:
                    raise MalformedEventStream(f"bad lengths: total {total}, headers "
                                               f"{headers_size}")
                if size - at < total:
                    needed = total
                    break
                end = at + total
                (crc,) = _U32.unpack_from(data, end - 4)
                if zlib.crc32(data[at:end - 4]) != crc:
                    raise MalformedEventStream("message checksum mismatch")
                start = at + PRELUDE_BYTES
                message = EventMessage(decode_headers(data[start:start + headers_size]),
                                       data[start + headers_size:end - 4])
                at = end
                yield message
        finally:
            rest = data[at:] if at < size else b""
            self._held = [rest] if rest else []
            self._held_bytes, self._needed = len(rest), needed
