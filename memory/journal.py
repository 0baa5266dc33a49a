"""Turn journals: how a finished turn becomes durable before ``done`` is sent.

- :class:`OutboxJournal`: XADD to the Redis outbox stream; the persister drains it to
  warm history and the cold archive (nothing on the hot path waits for DynamoDB or S3).
- :class:`DirectJournal`: on the embedded ``memory://`` backend, whose outbox would die
  with the process, the turn is written straight to the (local) warm store, and to the
  archive for plans that archive.
"""

from __future__ import annotations

import asyncio

from memory.cold.base import Archive
from memory.persister import Outbox
from memory.records import TurnRecord
from memory.warm.base import HistoryStore


class OutboxJournal:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def append(self, turn: TurnRecord) -> asyncio.Future[str]:
        """The outbox entry, queued at once (its future shares the turn's round trip)."""
        return self._outbox.append(turn)


class DirectJournal:
    def __init__(self, history: HistoryStore, archive: Archive | None) -> None:
        self._history = history
        self._archive = archive

    async def append(self, turn: TurnRecord) -> None:
        await self._history.write_turns([turn])
        if self._archive is not None and turn.archive:
            await self._archive.write([turn])
