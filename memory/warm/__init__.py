"""Warm history (DynamoDB or SQLite) behind :class:`HistoryStore`, chosen by URL.

``await open_history(url)`` returns a started store; close it with ``await store.aclose()``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from memory.warm.base import (
    Clock,
    ConversationMeta,
    HistoryStore,
    InvalidCursor,
    Page,
    title_for,
)

__all__ = ["ConversationMeta", "HistoryStore", "InvalidCursor", "Page", "open_history",
           "title_for"]


def aws_region(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


async def open_history(url: str, *, clock: Clock = time.time,
                       env: Mapping[str, str] | None = None) -> HistoryStore:
    """A started store for ``dynamodb://TABLE`` or ``sqlite:///PATH``.

    SQLite creates its file (and parent folders) and schema; a DynamoDB table is created
    by ``ensure_schema()`` (``chatgate init``), not here.
    """
    env = os.environ if env is None else env
    if url.startswith("dynamodb://"):
        from memory.warm.dynamodb import DynamoHistory

        table = url.removeprefix("dynamodb://").strip("/")
        if not table:
            raise ValueError(f"history URL without a table name: {url!r}")
        return await DynamoHistory(table, region=aws_region(env), clock=clock).start()
    if url.startswith("sqlite://"):
        from memory.warm.sqlite import SqliteHistory, sqlite_path

        return await SqliteHistory(sqlite_path(url), clock=clock).start()
    raise ValueError(f"unsupported history URL {url!r} (dynamodb://TABLE or sqlite:///PATH)")
