"""What only the SQLite warm store does: its tombstones expire on read, like its rows."""

from __future__ import annotations

from pathlib import Path

from memory.warm.base import TOMBSTONE_TTL_S
from memory.warm.sqlite import SqliteHistory
from tests.memory.factories import FakeClock, make_turn

DAY = 86400.0


async def test_a_batch_meets_live_and_expired_tombstones_in_one_write(tmp_path: Path) -> None:
    """An expired tombstone (still in the table until the next purge) no longer blocks
    its conversation; a live one in the same batch still does."""
    clock = FakeClock()
    history = await SqliteHistory(str(tmp_path / "history.db"), clock=clock).start()
    try:
        await history.write_turns([make_turn("c1"), make_turn("c2"), make_turn("c3")])
        await history.delete_conversation("growain", "alice", "c1")
        clock.advance(TOMBSTONE_TTL_S - DAY)
        await history.delete_conversation("growain", "alice", "c2")
        clock.advance(2 * DAY)
        again, late, kept = (make_turn(c, at=clock.now) for c in ("c1", "c2", "c3"))

        assert await history.write_turns([again, late, kept]) == [again, kept]
        meta = await history.get_conversation("growain", "alice", "c1")
        assert meta is not None and meta.message_count == 2
        assert await history.get_conversation("growain", "alice", "c2") is None
        third = await history.get_conversation("growain", "alice", "c3")
        assert third is not None and third.message_count == 4
    finally:
        await history.aclose()
