"""Server-sent events, decoded from bytes: pure, incremental, boundary-safe.

``SSEDecoder.feed(chunk)`` takes whatever bytes arrived (split anywhere, even inside a
UTF-8 sequence or a CRLF) and returns the complete events so far. Follows the WHATWG
event-stream rules that matter for model APIs: ``data`` lines joined with newlines,
``event`` names, comments (``:``) ignored, LF / CRLF / CR line ends.
``read_sse_events`` turns one network read into a provider's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from providers.base import ProviderEvent
from providers.errors import ProviderError
from providers.reading import read_events


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
        held = b""
        if b"\r" in buffer:  # CRLF and a lone CR end lines too: made LF, then split as LF
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: wait for the rest
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop() + held  # the unfinished last line (empty after an LF)
        events: list[SSEEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
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


MapEvent = Callable[[SSEEvent, str], list[ProviderEvent] | None]
"""A provider's mapping of one event (with data) to its events; None for the protocol's
last event (``[DONE]``, ``message_stop``)."""


def read_sse_events(decoder: SSEDecoder, raw: bytes, map_event: MapEvent, provider: str
                    ) -> tuple[list[ProviderEvent], bool, ProviderError | None]:
    """``providers.reading.read_events`` over the SSE events of one network read; an event
    without data carries nothing and is passed over."""
    return read_events([m for m in decoder.feed(raw) if m.data], map_event, provider)
