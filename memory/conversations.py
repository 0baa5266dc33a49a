"""Conversations as the service sees them: start, load (hot, else warm), record a turn.

Loading tries the hot cache first; when it has expired, the conversation is rehydrated
from warm history (recent messages + rolling summary) and put back in the hot cache.
Recording a turn appends both messages to the hot cache and hands the turn to the
journal (the durable outbox, or the warm store directly on the embedded backend) before
the caller sends ``done``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from memory.hot import HotMemory, is_conversation_id, new_conversation_id
from memory.pipelining import then, together
from memory.records import StoredMessage, TurnRecord
from memory.warm.base import HistoryStore


@dataclass(frozen=True, slots=True)
class LoadedConversation:
    conversation_id: str
    brand: str
    owner: str
    messages: list[StoredMessage] = field(default_factory=list)
    summary: str = ""
    is_new: bool = False
    rehydrated: bool = False


class TurnJournal(Protocol):
    """Where finished turns go to become durable. ``append`` answers a future when its
    call is already made (joined with no task of its own), else a coroutine."""

    def append(self, turn: TurnRecord) -> Awaitable[object]: ...


class ConversationStore:
    def __init__(self, hot: HotMemory, journal: TurnJournal, warm: HistoryStore | None,
                 *, recent_messages: int = 50) -> None:
        self._hot = hot
        self._journal = journal
        self._warm = warm
        self._recent = recent_messages

    @property
    def hot(self) -> HotMemory:
        return self._hot

    def start(self, brand: str, user_id: str) -> LoadedConversation:
        return LoadedConversation(conversation_id=new_conversation_id(), brand=brand,
                                  owner=user_id, is_new=True)

    async def load(self, brand: str, user_id: str,
                   conversation_id: str) -> LoadedConversation | None:
        """The caller's conversation, or None if unknown or someone else's."""
        if not is_conversation_id(conversation_id):
            return None
        hot = await self._hot.load(brand, conversation_id)
        if hot is not None:
            if hot.owner != user_id:
                return None
            return LoadedConversation(conversation_id, brand, user_id, hot.messages,
                                      hot.summary)
        return await self._rehydrate(brand, user_id, conversation_id)

    async def _rehydrate(self, brand: str, user_id: str,
                         conversation_id: str) -> LoadedConversation | None:
        if self._warm is None:
            return None
        meta = await self._warm.get_conversation(brand, user_id, conversation_id)
        if meta is None:
            return None
        summary = meta.summary or ""
        messages = await self._warm.messages(brand, user_id, conversation_id,
                                             limit=self._recent)
        await self._hot.store(brand, conversation_id, user_id, messages, summary=summary,
                              replace=True)
        return LoadedConversation(conversation_id, brand, user_id, messages, summary,
                                  rehydrated=True)

    def record(self, conversation: LoadedConversation,
               turn: TurnRecord) -> asyncio.Future[None]:
        """The turn into hot memory and into its journal: both calls are made at once
        (independent: one Redis round trip, and no task for a pipelined journal); the
        future is done when both are, or has the first error."""
        messages: Sequence[StoredMessage] = (turn.user_message, turn.assistant_message)
        stored = self._hot.store(conversation.brand, conversation.conversation_id,
                                 conversation.owner, messages, touch_session=True)
        journal = self._journal.append(turn)
        if asyncio.isfuture(journal):  # a pipelined outbox entry: no task at all
            return then(asyncio.gather(stored, journal), _nothing)
        # A coroutine (DirectJournal): in a task that a cancel waits for, as together() does.
        return asyncio.ensure_future(_both(stored, journal))


def _nothing(_: Any) -> None:
    return None


async def _both(stored: Awaitable[Any], journal: Awaitable[Any]) -> None:
    await together(stored, journal)
