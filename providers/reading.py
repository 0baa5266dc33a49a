"""One network read of a streamed answer, made a provider's events; shared by every wire.

A wire's decoder turns the read's bytes into messages (SSE events, AWS event-stream
messages); the provider maps each message to its events. What is common is here: the JSON
of a message's data (``event_json``), a message whose JSON has the wrong shape being a
broken stream rather than an internal error (``MALFORMED``, ``malformed_event``), and the
read's loop (``read_events``): its text deltas joined, the protocol's last event, and the
error that cut the read short after the events before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
import structlog

from providers.base import ProviderEvent, merge_text
from providers.errors import ProviderConnectionError, ProviderError

log = structlog.get_logger("chatgate.providers")

M = TypeVar("M")


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


def read_events(messages: Iterable[M], map_message: Callable[[M, str], list[ProviderEvent] | None],
                provider: str) -> tuple[list[ProviderEvent], bool, ProviderError | None]:
    """The events of one read's ``messages``, its text deltas joined (``merge_text``);
    whether the protocol's last event came (``map_message`` answers None for it); and the
    error that cut the read short, if one did (the events before it still count): one the
    decoding or the mapping raised, or a message of the wrong shape (``malformed_event``)."""
    events: list[ProviderEvent] = []
    try:
        for message in messages:
            try:
                mapped = map_message(message, provider)
            except MALFORMED as exc:  # the message's shape (the decoding is outside the try)
                return merge_text(events), False, malformed_event(provider, exc)
            if mapped is None:
                return merge_text(events), True, None
            events += mapped
    except ProviderError as exc:
        return merge_text(events), False, exc
    return merge_text(events), False, None
