"""Warm history: the one Protocol every backend implements, and its value types.

Warm history keeps, per tenant (brand + user), a conversation's metadata (title, times,
message count, rolling summary), its messages, and an audit entry per turn (no content).
Every item carries the expiry of the turn that wrote it (``TurnRecord.expires_at``, from
the plan's ``history_ttl_days``); reads ignore expired items whatever the backend does
about deleting them.

Semantics shared by all backends (the contract tests in ``tests/memory`` pin them):

- ``write_turns`` is idempotent on ``turn_id``: a replayed turn changes nothing.
- Every read and delete is scoped by brand *and* user: another user's conversation id
  is simply not found.
- ``delete_conversation`` leaves a tombstone, so a turn of that conversation still
  waiting in the write-behind outbox does not bring it back; ``write_turns`` returns
  only the turns it accepted (the persister archives just those).
- Lists are pages with an opaque ``cursor`` (``None`` on the last page). A cursor is only
  valid for the listing that produced it; anything else raises :class:`InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson

from memory.records import StoredMessage, TurnRecord

Clock = Callable[[], float]
T = TypeVar("T")

TITLE_CHARS = 60
MAX_PAGE = 1000
# How long a deleted conversation's id stays blocked for late outbox entries.
TOMBSTONE_TTL_S = 30 * 86400


class InvalidCursor(ValueError):
    """A page cursor that this listing did not produce (or that was tampered with)."""


@dataclass(frozen=True, slots=True)
class ConversationMeta:
    brand: str
    user_id: str
    conversation_id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int  # messages written (expired ones included until the meta expires)
    expires_at: int
    summary: str | None = None
    summary_covers: int = 0  # how many of the oldest messages the summary stands for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursor: str | None  # pass back for the next page; None: this was the last page


class HistoryStore(Protocol):
    """Warm history; see the module docstring for the shared semantics."""

    async def ensure_schema(self) -> None: ...

    async def write_turns(self, turns: Sequence[TurnRecord]) -> list[TurnRecord]: ...

    async def get_conversation(
        self, brand: str, user_id: str, conversation_id: str
    ) -> ConversationMeta | None: ...

    async def list_conversations(
        self, brand: str, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[ConversationMeta]: ...

    async def list_brand_conversations(
        self, brand: str, *, since: float = 0.0, limit: int = 100, cursor: str | None = None
    ) -> Page[ConversationMeta]: ...

    async def messages(
        self, brand: str, user_id: str, conversation_id: str, *, limit: int | None = None
    ) -> list[StoredMessage]: ...

    async def save_summary(
        self, brand: str, user_id: str, conversation_id: str, summary: str,
        covers_messages: int,
    ) -> bool: ...

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str) -> bool: ...

    async def list_audit(
        self, brand: str, *, since: float = 0.0, limit: int = 100, cursor: str | None = None
    ) -> Page[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


def title_for(text: str) -> str:
    """A conversation's title: its first user message, whitespace folded, ~60 characters."""
    folded = " ".join(text.split())
    if len(folded) <= TITLE_CHARS:
        return folded
    return folded[: TITLE_CHARS - 1].rstrip() + "…"


def check_limit(limit: int | None, *, allow_none: bool = False) -> None:
    if limit is None and allow_none:
        return
    if limit is None or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer between 1 and {MAX_PAGE}, got {limit!r}")


def unique_turns(turns: Sequence[TurnRecord]) -> list[TurnRecord]:
    """The turns in order, each turn_id once (the last copy wins)."""
    by_id = {turn.turn_id: turn for turn in turns}
    return sorted(by_id.values(), key=lambda t: (t.created_at, t.turn_id))


ConversationKey = tuple[str, str, str]  # brand, user_id, conversation_id


def group_by_conversation(turns: Sequence[TurnRecord]) -> dict[ConversationKey, list[TurnRecord]]:
    groups: dict[ConversationKey, list[TurnRecord]] = {}
    for turn in turns:
        groups.setdefault((turn.brand, turn.user_id, turn.conversation_id), []).append(turn)
    return groups


def _scope_tag(scope: str) -> str:
    return hashlib.blake2b(scope.encode(), digest_size=8).hexdigest()


def encode_cursor(scope: str, position: Any) -> str:
    """An opaque cursor: a tag of the listing's scope (checked on return) and a position."""
    raw = orjson.dumps({"s": _scope_tag(scope), "p": position})
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, scope: str) -> Any:
    """The position inside ``cursor``; :class:`InvalidCursor` unless it was made for ``scope``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if not isinstance(data, dict) or data.get("s") != _scope_tag(scope) or "p" not in data:
        raise InvalidCursor("cursor does not belong to this listing")
    return data["p"]
