"""AWS event-stream messages (``application/vnd.amazon.eventstream``), as Bedrock's
``converse-stream`` sends them: a prelude (total and header lengths) and its CRC, string
headers, a JSON payload, the message's CRC. Standard library only: the fake Bedrock of the
tests and the benchmarks' upstream (``bench/upstream.py``, in its own environment) both
encode with it; botocore decodes."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

_STRING_HEADER = 7


def _crc(data: bytes) -> bytes:
    return struct.pack(">I", zlib.crc32(data) & 0xFFFFFFFF)


def encode_headers(headers: Mapping[str, str]) -> bytes:
    out = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING_HEADER, len(raw_value)) + raw_value
    return out


def encode_event_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude + prelude CRC + headers + payload + CRC."""
    raw_headers = encode_headers(headers)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    message = prelude + _crc(prelude) + raw_headers + payload
    return message + _crc(message)


def event_frame(event_type: str, body: Mapping[str, Any]) -> bytes:
    return raw_event_frame(event_type, json.dumps(body).encode())


def raw_event_frame(event_type: str, payload: bytes) -> bytes:
    """An event message with any payload, JSON or not (a malformed one, an empty one)."""
    headers = {":event-type": event_type, ":content-type": "application/json",
               ":message-type": "event"}
    return encode_event_message(headers, payload)


def exception_frame(exception_type: str, message: str) -> bytes:
    headers = {":exception-type": exception_type, ":content-type": "application/json",
               ":message-type": "exception"}
    return encode_event_message(headers, json.dumps({"message": message}).encode())
