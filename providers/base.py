"""The provider seam: one request type, one event union, one streaming Protocol.

A provider turns a :class:`ProviderRequest` into an async stream of typed events.
Closing the iterator (``aclose``) must close the upstream connection promptly; the
router and the service always consume streams under ``contextlib.aclosing``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

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
