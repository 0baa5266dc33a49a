"""The provider seam: one request type, one event union, one streaming Protocol.

A provider turns a :class:`ProviderRequest` into an async stream of typed events.
Closing the iterator (``aclose``) must close the upstream connection promptly; the
router and the service always consume streams under ``contextlib.aclosing``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog

log = structlog.get_logger("chatgate.providers")

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What every provider receives. ``messages`` starts with the system prompt if any."""

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    request_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Provider-reported token usage; either field may come in separate events."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    type: Literal["usage"] = "usage"


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    type: Literal["finish"] = "finish"


ProviderEvent = TextDelta | UsageReport | Finish


def delta_text(value: object) -> str | None:
    """A streamed piece of text as a provider sent it: a string, or None (absent).
    Anything else raises ``TypeError``: the event is malformed (a broken stream)."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"delta text is a {type(value).__name__}, not a string")


def token_count(value: object) -> int | None:
    """A provider-reported token count as it may be billed: a whole number, at least 0
    (``12.0`` is 12), else None: not reported, so the gateway's own count stands. A count
    of another kind (a string, a negative, a bool) is logged, never billed; it does not
    break an answer whose text came whole (the usage comes last)."""
    if type(value) is int and value >= 0:
        return value
    if value is None:
        return None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    log.warning("unusable_token_count", kind=type(value).__name__)
    return None


def merge_text(events: list[ProviderEvent]) -> list[ProviderEvent]:
    """Consecutive text deltas joined into one, in order, everything else as it was.

    A provider applies it to the events of one network read: pieces that arrived
    together leave together, as one delta instead of several (no piece ever waits for
    another). An idle gateway reads each piece on its own and changes nothing; a busy one,
    whose reads find several pieces waiting, handles fewer and larger deltas downstream
    (router, sink, socket frames), so its work per answer falls as its load rises."""
    if len(events) < 2:
        return events
    merged: list[ProviderEvent] = []
    for event in events:
        if merged and type(event) is TextDelta and type(merged[-1]) is TextDelta:
            merged[-1] = TextDelta(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged


class Provider(Protocol):
    """A streaming chat model. ``name`` is the provider kind (``openai``, ``mock``…)."""

    @property
    def name(self) -> str: ...

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Yield events for one answer; raise :class:`providers.errors.ProviderError`."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections (called once, at shutdown)."""
        ...
