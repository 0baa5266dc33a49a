"""Warm history in SQLite: the embedded backend (``sqlite:///PATH``), same semantics as DynamoDB.

Tables (every row keyed by brand and user, every row with ``expires_at``):

- ``conversations (brand, user_id, conversation_id)``: title, created/updated times,
  message count, rolling summary; indexed by ``(brand, user_id, updated_at)`` for a
  user's list and ``(brand, updated_at)`` for a brand's.
- ``messages (brand, user_id, conversation_id, turn_id, n)``: ``INSERT OR IGNORE`` makes a
  replayed turn a no-op, and only newly inserted rows are counted into the meta.
- ``audit (brand, turn_id)``: the content-free audit entry as JSON, indexed by time.
- ``tombstones (brand, user_id, conversation_id)``: deleted conversations, so late outbox
  entries do not bring them back.

sqlite3 has no async API: one dedicated connection runs each operation in a worker thread
(``asyncio.to_thread``), one at a time. A write batch is one transaction. Cursors are
keyset positions (the last row's sort key), so pages never skip or repeat rows. Expired
rows are filtered on read and purged at start and by :meth:`SqliteHistory.purge_expired`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from memory.records import StoredMessage, TurnRecord
from memory.warm.base import (
    TOMBSTONE_TTL_S,
    Clock,
    ConversationMeta,
    InvalidCursor,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    title_for,
    unique_turns,
)

R = TypeVar("R")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    brand TEXT NOT NULL, user_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
    title TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    message_count INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    summary TEXT, summary_covers INTEGER NOT NULL DEFAULT 0, summary_at REAL,
    PRIMARY KEY (brand, user_id, conversation_id));
CREATE INDEX IF NOT EXISTS conversations_by_user
    ON conversations (brand, user_id, updated_at, conversation_id);
CREATE INDEX IF NOT EXISTS conversations_by_brand
    ON conversations (brand, updated_at, user_id, conversation_id);
CREATE TABLE IF NOT EXISTS messages (
    brand TEXT NOT NULL, user_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
    turn_id TEXT NOT NULL, n INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    created_at REAL NOT NULL, tokens INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (brand, user_id, conversation_id, turn_id, n));
CREATE INDEX IF NOT EXISTS messages_in_order
    ON messages (brand, user_id, conversation_id, created_at, turn_id, n);
CREATE TABLE IF NOT EXISTS audit (
    brand TEXT NOT NULL, turn_id TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL,
    expires_at INTEGER NOT NULL, PRIMARY KEY (brand, turn_id));
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (brand, created_at, turn_id);
CREATE TABLE IF NOT EXISTS tombstones (
    brand TEXT NOT NULL, user_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL, PRIMARY KEY (brand, user_id, conversation_id));
"""

UPSERT_META = """
INSERT INTO conversations (brand, user_id, conversation_id, title, created_at, updated_at,
                           message_count, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (brand, user_id, conversation_id) DO UPDATE SET
    title = CASE WHEN excluded.created_at < created_at THEN excluded.title ELSE title END,
    created_at = min(created_at, excluded.created_at),
    expires_at = CASE WHEN excluded.updated_at >= updated_at
                      THEN excluded.expires_at ELSE expires_at END,
    updated_at = max(updated_at, excluded.updated_at),
    message_count = message_count + excluded.message_count
"""

INSERT_MESSAGES = ("INSERT OR IGNORE INTO messages VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

META_COLUMNS = ("brand, user_id, conversation_id, title, created_at, updated_at, message_count, "
                "expires_at, summary, summary_covers")
CONVERSATION_KEY = "brand = ? AND user_id = ? AND conversation_id = ?"


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path``, ``sqlite:////abs/path`` or ``sqlite:///:memory:`` → a path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL (sqlite:///PATH): {url!r}")
    path = url.removeprefix("sqlite:///")
    if not path:
        raise ValueError(f"sqlite URL without a path: {url!r}")
    return path


def _meta(row: sqlite3.Row) -> ConversationMeta:
    return ConversationMeta(
        brand=row["brand"], user_id=row["user_id"], conversation_id=row["conversation_id"],
        title=row["title"], created_at=row["created_at"], updated_at=row["updated_at"],
        message_count=row["message_count"], expires_at=row["expires_at"],
        summary=row["summary"], summary_covers=row["summary_covers"])


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _write_batch(conn: sqlite3.Connection, turns: Sequence[TurnRecord],
                 now: float) -> list[TurnRecord]:
    """A batch inside its transaction; returns the turns whose conversation was not deleted.

    Every audit entry is kept either way: the turn happened (and was billed). The batch's
    tombstones are looked up in one query. A turn's two messages go in one statement, whose
    change count is how many were new (a replay adds none, and leaves the meta alone).
    """
    conn.executemany("INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?)", [
        (t.brand, t.turn_id, t.created_at, orjson.dumps(t.audit()).decode(), t.expires_at)
        for t in turns])
    deleted = _deleted_conversations(conn, turns, now)
    accepted = []
    for turn in turns:
        key = (turn.brand, turn.user_id, turn.conversation_id)
        if key in deleted:
            continue
        accepted.append(turn)
        asked, answered = turn.user_message, turn.assistant_message
        inserted = conn.execute(INSERT_MESSAGES, (
            *key, turn.turn_id, 0, asked.role, asked.content, asked.created_at, asked.tokens,
            turn.expires_at,
            *key, turn.turn_id, 1, answered.role, answered.content, answered.created_at,
            answered.tokens, turn.expires_at)).rowcount
        if inserted:
            conn.execute(UPSERT_META, (*key, title_for(asked.content), turn.created_at,
                                       turn.created_at, inserted, turn.expires_at))
    return accepted


def _deleted_conversations(conn: sqlite3.Connection, turns: Sequence[TurnRecord],
                           now: float) -> set[tuple[str, str, str]]:
    """The batch's conversations with a live tombstone, in one query."""
    keys = list({(t.brand, t.user_id, t.conversation_id) for t in turns})
    if not keys:
        return set()
    rows = conn.execute(
        "SELECT brand, user_id, conversation_id FROM tombstones WHERE expires_at > ? "
        "AND (brand, user_id, conversation_id) IN (VALUES "
        + ", ".join(["(?, ?, ?)"] * len(keys)) + ")",
        (now, *(value for key in keys for value in key))).fetchall()
    return {(row[0], row[1], row[2]) for row in rows}


class SqliteHistory:
    """:class:`~memory.warm.base.HistoryStore` in one SQLite file."""

    def __init__(self, path: str, *, clock: Clock = time.time) -> None:
        self.path = path
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    async def start(self) -> SqliteHistory:
        if self._conn is None:
            self._conn = await asyncio.to_thread(self._connect)
            await self.ensure_schema()
            await self.purge_expired()
        return self

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def aclose(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    async def _run(self, operation: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``operation`` on the connection in a worker thread, one at a time."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("SqliteHistory used before start() or after aclose()")

            def locked() -> R:
                with self._thread_lock:  # a cancelled caller's thread may still be running
                    return operation(conn)

            return await asyncio.to_thread(locked)

    async def ensure_schema(self) -> None:
        await self._run(lambda conn: conn.executescript(SCHEMA))

    async def purge_expired(self) -> None:
        """Delete expired rows (reads ignore them anyway)."""
        now = self._clock()

        def purge(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                for table in ("conversations", "messages", "audit", "tombstones"):
                    conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))

        await self._run(purge)

    # -- writes ---------------------------------------------------------------------

    async def write_turns(self, turns: Sequence[TurnRecord]) -> list[TurnRecord]:
        """Write turns idempotently in one transaction; returns those accepted."""
        ordered, now = unique_turns(turns), self._clock()

        def write(conn: sqlite3.Connection) -> list[TurnRecord]:
            with _transaction(conn):
                return _write_batch(conn, ordered, now)

        return await self._run(write)

    async def save_summary(self, brand: str, user_id: str, conversation_id: str, summary: str,
                           covers_messages: int) -> bool:
        now = self._clock()

        def save(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE conversations SET summary = ?, summary_covers = ?, summary_at = ? "
                f"WHERE {CONVERSATION_KEY} AND expires_at > ?",
                (summary, covers_messages, now, brand, user_id, conversation_id, now))
            return cursor.rowcount > 0

        return await self._run(save)

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str) -> bool:
        key, now = (brand, user_id, conversation_id), self._clock()

        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                conn.execute("INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?, ?)",
                             (*key, int(now) + TOMBSTONE_TTL_S))
                conn.execute(f"DELETE FROM messages WHERE {CONVERSATION_KEY}", key)
                found = conn.execute(
                    f"DELETE FROM conversations WHERE {CONVERSATION_KEY} RETURNING expires_at",
                    key).fetchall()
            return any(row["expires_at"] > now for row in found)

        return await self._run(delete)

    # -- reads ----------------------------------------------------------------------

    async def get_conversation(self, brand: str, user_id: str,
                               conversation_id: str) -> ConversationMeta | None:
        now = self._clock()

        def get(conn: sqlite3.Connection) -> ConversationMeta | None:
            row = conn.execute(
                f"SELECT {META_COLUMNS} FROM conversations WHERE {CONVERSATION_KEY} "
                "AND expires_at > ?", (brand, user_id, conversation_id, now)).fetchone()
            return _meta(row) if row else None

        return await self._run(get)

    async def list_conversations(self, brand: str, user_id: str, *, limit: int = 50,
                                 cursor: str | None = None) -> Page[ConversationMeta]:
        """The user's conversations, most recently updated first."""
        check_limit(limit)
        scope = f"user-conversations:{brand}:{user_id}"
        after = _position(cursor, scope, 2) or [float("inf"), ""]
        sql = (f"SELECT {META_COLUMNS} FROM conversations WHERE brand = ? AND user_id = ? "
               "AND expires_at > ? AND (updated_at, conversation_id) < (?, ?) "
               "ORDER BY updated_at DESC, conversation_id DESC LIMIT ?")
        rows = await self._select(sql, (brand, user_id, self._clock(), *after, limit + 1))
        return _page([_meta(r) for r in rows], limit, scope,
                     lambda m: [m.updated_at, m.conversation_id])

    async def list_brand_conversations(self, brand: str, *, since: float = 0.0, limit: int = 100,
                                       cursor: str | None = None) -> Page[ConversationMeta]:
        """The brand's conversations updated at or after ``since``, most recent first."""
        check_limit(limit)
        scope = f"brand-conversations:{brand}:{since!r}"
        after = _position(cursor, scope, 3) or [float("inf"), "", ""]
        sql = (f"SELECT {META_COLUMNS} FROM conversations WHERE brand = ? AND updated_at >= ? "
               "AND expires_at > ? AND (updated_at, user_id, conversation_id) < (?, ?, ?) "
               "ORDER BY updated_at DESC, user_id DESC, conversation_id DESC LIMIT ?")
        rows = await self._select(sql, (brand, since, self._clock(), *after, limit + 1))
        return _page([_meta(r) for r in rows], limit, scope,
                     lambda m: [m.updated_at, m.user_id, m.conversation_id])

    async def messages(self, brand: str, user_id: str, conversation_id: str, *,
                       limit: int | None = None) -> list[StoredMessage]:
        """Oldest to newest; with ``limit``, the last ``limit`` messages."""
        check_limit(limit, allow_none=True)
        sql = ("SELECT role, content, created_at, tokens FROM messages "
               f"WHERE {CONVERSATION_KEY} AND expires_at > ? "
               "ORDER BY created_at DESC, turn_id DESC, n DESC LIMIT ?")
        rows = await self._select(sql, (brand, user_id, conversation_id, self._clock(),
                                        -1 if limit is None else limit))
        return [StoredMessage(role=r["role"], content=r["content"], created_at=r["created_at"],
                              tokens=r["tokens"]) for r in reversed(rows)]

    async def list_audit(self, brand: str, *, since: float = 0.0, limit: int = 100,
                         cursor: str | None = None) -> Page[dict[str, Any]]:
        """The brand's audit entries from ``since`` on, oldest first."""
        check_limit(limit)
        scope = f"audit:{brand}:{since!r}"
        after = _position(cursor, scope, 2) or [float("-inf"), ""]
        sql = ("SELECT data FROM audit WHERE brand = ? AND created_at >= ? AND expires_at > ? "
               "AND (created_at, turn_id) > (?, ?) ORDER BY created_at, turn_id LIMIT ?")
        rows = await self._select(sql, (brand, since, self._clock(), *after, limit + 1))
        entries: list[dict[str, Any]] = [orjson.loads(r["data"]) for r in rows]
        return _page(entries, limit, scope, lambda e: [e["created_at"], e["turn_id"]])

    async def _select(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        return await self._run(lambda conn: conn.execute(sql, params).fetchall())


def _position(cursor: str | None, scope: str, size: int) -> list[Any] | None:
    if cursor is None:
        return None
    position = decode_cursor(cursor, scope)
    if not isinstance(position, list) or len(position) != size:
        raise InvalidCursor("malformed cursor position")
    return position


def _page(rows: list[R], limit: int, scope: str,
          position: Callable[[R], list[Any]]) -> Page[R]:
    """A page from ``limit + 1`` fetched rows: the extra one only says there is more."""
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    return Page(rows, encode_cursor(scope, position(rows[-1])))
