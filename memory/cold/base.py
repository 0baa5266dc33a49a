"""Cold archive: the Protocol and its object layout (pure encoding, no I/O).

Turns of plans with ``archive = true`` are archived as gzipped JSON Lines, one
``TurnRecord`` (``to_json``) per line, one object per write batch and partition:

    {prefix}/brand={brand}/dt={YYYY-MM-DD}/{uuid}.jsonl.gz

``brand`` is URL-quoted and ``dt`` is the turn's UTC day, so the layout is Hive-style
partitioned for Athena/Glue, and lifecycle rules can move old days to cheaper storage.
Objects are written once and only rewritten to delete a conversation's lines. Archiving is
at least once (a batch retried after a crash may be written twice): readers drop repeated
``turn_id``s, as :func:`decode_turns` callers here do.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Protocol
from urllib.parse import quote

from memory.records import TurnRecord

Partition = tuple[str, date]  # brand, UTC day


class Archive(Protocol):
    async def ensure_bucket(self) -> None: ...

    async def write(self, turns: Sequence[TurnRecord]) -> list[str]: ...

    async def read(self, brand: str, *, day: date | None = None, user_id: str | None = None,
                   conversation_id: str | None = None) -> list[TurnRecord]: ...

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str) -> int: ...

    async def aclose(self) -> None: ...


def day_of(turn: TurnRecord) -> date:
    return datetime.fromtimestamp(turn.created_at, tz=UTC).date()


def partitions(turns: Iterable[TurnRecord]) -> dict[Partition, list[TurnRecord]]:
    grouped: dict[Partition, list[TurnRecord]] = {}
    for turn in turns:
        grouped.setdefault((turn.brand, day_of(turn)), []).append(turn)
    return grouped


def brand_prefix(prefix: str, brand: str, day: date | None = None) -> str:
    """The key prefix of a brand's objects (of one day, if given), ending in ``/``."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    path = f"{head}brand={quote(brand, safe='')}/"
    return f"{path}dt={day.isoformat()}/" if day else path


def object_key(prefix: str, partition: Partition) -> str:
    brand, day = partition
    return f"{brand_prefix(prefix, brand, day)}{uuid.uuid4().hex}.jsonl.gz"


def encode_turns(turns: Iterable[TurnRecord]) -> bytes:
    return gzip.compress(b"".join(t.to_json() + b"\n" for t in turns), mtime=0)


def decode_turns(data: bytes) -> list[TurnRecord]:
    return [TurnRecord.from_json(line) for line in gzip.decompress(data).splitlines() if line]


def matches(turn: TurnRecord, user_id: str | None, conversation_id: str | None) -> bool:
    return ((user_id is None or turn.user_id == user_id)
            and (conversation_id is None or turn.conversation_id == conversation_id))


def unique_sorted(turns: Iterable[TurnRecord]) -> list[TurnRecord]:
    """Each turn once (archiving is at least once), oldest first."""
    by_id = {t.turn_id: t for t in turns}
    return sorted(by_id.values(), key=lambda t: (t.created_at, t.turn_id))


def without_conversation(turns: Sequence[TurnRecord], user_id: str,
                         conversation_id: str) -> list[TurnRecord]:
    return [t for t in turns if not matches(t, user_id, conversation_id)]
