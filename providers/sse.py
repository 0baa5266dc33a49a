"""Server-sent events, decoded from bytes: pure, incremental, boundary-safe.

``SSEDecoder.feed(chunk)`` takes whatever bytes arrived (split anywhere, even inside a
UTF-8 sequence or a CRLF) and returns the complete events so far. Follows the WHATWG
event-stream rules that matter for model APIs: ``data`` lines joined with newlines,
``event`` names, comments (``:``) ignored, LF / CRLF / CR line ends. ``event_json``
decodes an event's JSON object (orjson), a provider's broken one as a connection error;
``read_sse_events`` turns one network read into a provider's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
import structlog

from providers.base import ProviderEvent, merge_text
from providers.errors import ProviderConnectionError, ProviderError

log = structlog.get_logger("chatgate.providers")


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


def event_json(text: str | bytes, provider: str) -> dict[str, Any]:
    """An event's data as a JSON object; anything else the provider sent is a broken
    stream (``ProviderConnectionError``: retryable, as a cut connection)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProviderConnectionError(f"{provider} sent invalid JSON", provider=provider) from None
    if not isinstance(data, dict):
        raise ProviderConnectionError(f"{provider} sent an unexpected event", provider=provider)
    return data


# What mapping an event whose JSON has the wrong shape raises (a string where an object
# belongs): a broken stream, as broken JSON is, not an internal error.
MALFORMED = (AttributeError, TypeError, KeyError, IndexError)


def malformed_event(provider: str, cause: Exception) -> ProviderConnectionError:
    """The error of an event that mapping could not read (``cause``: what the mapping
    raised, kept as the error's cause and logged, so that a mapping bug of ours stays
    visible instead of passing for a provider's fault)."""
    log.warning("malformed_event", provider=provider, error=type(cause).__name__,
                exc_info=cause)
    error = ProviderConnectionError(f"{provider} sent a malformed event", provider=provider)
    error.__cause__ = cause
    return error


MapEvent = Callable[[SSEEvent, str], list[ProviderEvent] | None]
"""A provider's mapping of one event (with data) to its events; None for the protocol's
last event (``[DONE]``, ``message_stop``)."""


def read_sse_events(decoder: SSEDecoder, raw: bytes, map_event: MapEvent, provider: str
                    ) -> tuple[list[ProviderEvent], bool, ProviderError | None]:
    """The events of one network read, its text deltas joined (``merge_text``); whether
    the protocol's last event came; and the in-stream error that cut the read short, if
    one did (the events before it still count). An event without data carries nothing;
    one whose JSON has the wrong shape is a broken stream (``malformed_event``)."""
    events: list[ProviderEvent] = []
    try:
        for message in decoder.feed(raw):
            if not message.data:
                continue
            try:
                mapped = map_event(message, provider)
            except MALFORMED as exc:  # the event's shape (our decoding is outside the try)
                return merge_text(events), False, malformed_event(provider, exc)
            if mapped is None:
                return merge_text(events), True, None
            events += mapped
    except ProviderError as exc:
        return merge_text(events), False, exc
    return merge_text(events), False, None
