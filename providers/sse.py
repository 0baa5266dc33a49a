"""Server-sent events, decoded from bytes: pure, incremental, boundary-safe.

``SSEDecoder.feed(chunk)`` takes whatever bytes arrived (split anywhere, even inside a
UTF-8 sequence or a CRLF) and returns the complete events so far. Follows the WHATWG
event-stream rules that matter for model APIs: ``data`` lines joined with newlines,
``event`` names, comments (``:``) ignored, LF / CRLF / CR line ends.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    data: str
    event: str = ""


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SSEEvent] = []
        if b"\r" not in buffer:  # LF line ends only (what model APIs send): split at once
            lines = buffer.split(b"\n")
            self._buffer = lines.pop()  # the unfinished last line (empty after an LF)
            for line in lines:
                event = self._line(line)
                if event is not None:
                    events.append(event)
            return events
        start = 0
        while True:
            end = _line_end(buffer, start)
            if end < 0:
                break
            following = _next_line(buffer, end)
            if following < 0:  # a CR at the very end: wait for a possible LF
                break
            line, start = buffer[start:end], following
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:  # blank line: dispatch
            data = self._data
            if not data:
                self._event = ""
                return None
            event = SSEEvent(data[0] if len(data) == 1 else "\n".join(data), self._event)
            self._data, self._event = [], ""
            return event
        if line[:6] == b"data: ":  # the usual line, first
            self._data.append(line[6:].decode("utf-8", errors="replace"))
            return None
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", errors="replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        return None


def _line_end(buffer: bytes, start: int) -> int:
    lf, cr = buffer.find(b"\n", start), buffer.find(b"\r", start)
    if cr < 0:
        return lf
    return cr if lf < 0 or cr < lf else lf


def _next_line(buffer: bytes, end: int) -> int:
    """Where the next line starts after the line end at ``end`` (-1: undecidable yet)."""
    if buffer[end:end + 1] == b"\r":
        if end + 1 == len(buffer):
            return -1
        return end + 2 if buffer[end + 1:end + 2] == b"\n" else end + 1
    return end + 1
