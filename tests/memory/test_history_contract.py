"""One contract for warm history, run against DynamoDB (moto over HTTP) and SQLite."""

from __future__ import annotations

import pytest

from memory.warm import HistoryStore, InvalidCursor
from memory.warm.base import ConversationMeta, Page
from tests.memory.factories import START, FakeClock, make_turn

DAY = 86400.0


async def test_turns_make_a_conversation(history: HistoryStore) -> None:
    first = make_turn("c1", text="  What is\n the   best time to post on a Monday morning for B2B? "
                      "Please be specific.", at=START)
    second = make_turn("c1", text="And on Friday?", answer="Later.", at=START + 60)
    assert await history.write_turns([first, second]) == [first, second]

    meta = await history.get_conversation("growain", "alice", "c1")
    assert meta is not None
    assert meta.title.startswith("What is the best time to post on a Monday")
    assert len(meta.title) <= 60 and meta.title.endswith("…")
    assert (meta.created_at, meta.updated_at, meta.message_count) == (START, START + 60, 4)
    assert meta.expires_at == second.expires_at and meta.summary is None

    messages = await history.messages("growain", "alice", "c1")
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2].content == "And on Friday?" and messages[3].tokens == 5
    last = await history.messages("growain", "alice", "c1", limit=3)
    assert last == messages[1:]


async def test_replayed_turns_change_nothing(history: HistoryStore) -> None:
    turns = [make_turn("c1", at=START + i) for i in range(3)]
    await history.write_turns(turns)
    assert await history.write_turns([*turns, turns[0]]) == turns  # replay, dup in a batch
    await history.write_turns(turns[1:2])

    meta = await history.get_conversation("growain", "alice", "c1")
    assert meta is not None and meta.message_count == 6
    assert len(await history.messages("growain", "alice", "c1")) == 6
    audit = await history.list_audit("growain")
    assert sorted(e["turn_id"] for e in audit.items) == sorted(t.turn_id for t in turns)


async def test_turns_arriving_late_keep_the_newest_time(history: HistoryStore) -> None:
    newer = make_turn("c1", text="second question", at=START + 100)
    older = make_turn("c1", text="first question", at=START)
    await history.write_turns([newer])
    await history.write_turns([older])

    meta = await history.get_conversation("growain", "alice", "c1")
    assert meta is not None
    assert (meta.updated_at, meta.message_count) == (START + 100, 4)
    contents = [m.content for m in await history.messages("growain", "alice", "c1")]
    assert contents[0] == "first question" and contents[2] == "second question"


async def test_another_users_conversation_is_invisible(history: HistoryStore) -> None:
    await history.write_turns([make_turn("c1", user_id="alice")])

    assert await history.get_conversation("growain", "mallory", "c1") is None
    assert await history.get_conversation("mindagain", "alice", "c1") is None
    assert await history.messages("growain", "mallory", "c1") == []
    assert (await history.list_conversations("growain", "mallory")).items == []
    assert not await history.save_summary("growain", "mallory", "c1", "stolen", 2)
    assert not await history.delete_conversation("growain", "mallory", "c1")
    assert await history.get_conversation("growain", "alice", "c1") is not None
    assert len(await history.messages("growain", "alice", "c1")) == 2


async def test_ids_with_separators_do_not_collide(history: HistoryStore) -> None:
    await history.write_turns([make_turn("b#C#c", user_id="a")])
    assert await history.get_conversation("growain", "a#C#b", "c") is None
    assert await history.messages("growain", "a#C#b", "c") == []
    assert await history.get_conversation("growain", "a", "b#C#c") is not None


async def test_summary_is_saved_on_the_conversation(history: HistoryStore) -> None:
    await history.write_turns([make_turn("c1")])
    assert await history.save_summary("growain", "alice", "c1", "They said hello.", 2)
    meta = await history.get_conversation("growain", "alice", "c1")
    assert meta is not None and (meta.summary, meta.summary_covers) == ("They said hello.", 2)
    assert not await history.save_summary("growain", "alice", "nope", "x", 1)
    assert await history.get_conversation("growain", "alice", "nope") is None


async def test_delete_removes_messages_meta_and_summary(history: HistoryStore) -> None:
    turns = [make_turn("c1", at=START + i) for i in range(3)]
    await history.write_turns([*turns, make_turn("c2")])
    await history.save_summary("growain", "alice", "c1", "summary", 4)

    assert await history.delete_conversation("growain", "alice", "c1")
    assert await history.get_conversation("growain", "alice", "c1") is None
    assert await history.messages("growain", "alice", "c1") == []
    listed = await history.list_conversations("growain", "alice")
    assert [m.conversation_id for m in listed.items] == ["c2"]
    assert not await history.delete_conversation("growain", "alice", "c1")


async def test_a_late_turn_does_not_bring_a_deleted_conversation_back(
        history: HistoryStore) -> None:
    await history.write_turns([make_turn("c1")])
    await history.delete_conversation("growain", "alice", "c1")
    late = make_turn("c1", at=START + 5)
    other = make_turn("c2", at=START + 5)

    assert await history.write_turns([late, other]) == [other]
    assert await history.get_conversation("growain", "alice", "c1") is None
    assert await history.messages("growain", "alice", "c1") == []
    audited = {e["turn_id"] for e in (await history.list_audit("growain")).items}
    assert late.turn_id in audited  # the turn happened and was billed


async def test_expired_items_are_not_returned(history: HistoryStore, clock: FakeClock) -> None:
    await history.write_turns([make_turn("old", at=START, ttl_days=1),
                               make_turn("kept", at=START, ttl_days=1),
                               make_turn("kept", at=START + 2 * DAY, ttl_days=7)])
    clock.advance(1.5 * DAY)
    assert await history.get_conversation("growain", "alice", "old") is None
    clock.advance(1.0 * DAY)  # now START + 2.5 days: the first turn of "kept" has expired

    assert await history.get_conversation("growain", "alice", "old") is None
    assert await history.messages("growain", "alice", "old") == []
    listed = await history.list_conversations("growain", "alice")
    assert [m.conversation_id for m in listed.items] == ["kept"]
    brand = await history.list_brand_conversations("growain")
    assert [m.conversation_id for m in brand.items] == ["kept"]
    assert len(await history.messages("growain", "alice", "kept")) == 2
    assert len((await history.list_audit("growain")).items) == 1
    assert not await history.save_summary("growain", "alice", "old", "x", 1)


async def _all_pages(fetch: object, **kwargs: object) -> list[list[ConversationMeta]]:
    pages, cursor = [], None
    while True:
        page: Page[ConversationMeta] = await fetch(cursor=cursor, **kwargs)  # type: ignore[operator]
        pages.append(page.items)
        cursor = page.cursor
        if cursor is None:
            return pages


async def test_a_users_conversations_page_newest_first(history: HistoryStore) -> None:
    await history.write_turns([make_turn(f"c{i}", at=START + i) for i in range(7)])
    await history.write_turns([make_turn("c2", at=START + 100)])  # c2 becomes the newest

    pages = await _all_pages(history.list_conversations, brand="growain", user_id="alice",
                             limit=3)
    ids = [m.conversation_id for page in pages for m in page]
    assert ids == ["c2", "c6", "c5", "c4", "c3", "c1", "c0"]
    assert [len(p) for p in pages] == [3, 3, 1]


async def test_brand_conversations_page_past_many_items(history: HistoryStore) -> None:
    turns = [make_turn(f"conv-{i:03d}", user_id=f"user-{i % 7}", at=START + i)
             for i in range(250)]
    turns.append(make_turn("elsewhere", brand="mindagain"))
    await history.write_turns(turns)

    pages = await _all_pages(history.list_brand_conversations, brand="growain", limit=100)
    assert [len(p) for p in pages] == [100, 100, 50]
    ids = [m.conversation_id for page in pages for m in page]
    assert ids == [f"conv-{i:03d}" for i in reversed(range(250))]

    recent = await history.list_brand_conversations("growain", since=START + 240, limit=100)
    assert len(recent.items) == 10 and recent.cursor is None


async def test_audit_entries_page_oldest_first_without_content(history: HistoryStore) -> None:
    turns = [make_turn(f"c{i % 3}", at=START + i, text="secret words") for i in range(5)]
    await history.write_turns(turns)

    first = await history.list_audit("growain", limit=3)
    assert first.cursor is not None
    rest = await history.list_audit("growain", limit=3, cursor=first.cursor)
    entries = first.items + rest.items
    assert [e["turn_id"] for e in entries] == [t.turn_id for t in turns]
    assert rest.cursor is None
    assert "secret" not in repr(entries) and entries[0]["prompt_tokens"] == 10
    since = await history.list_audit("growain", since=START + 3)
    assert [e["turn_id"] for e in since.items] == [t.turn_id for t in turns[3:]]


async def test_cursors_only_work_for_their_own_listing(history: HistoryStore) -> None:
    await history.write_turns([make_turn(f"c{i}", at=START + i) for i in range(3)])
    page = await history.list_conversations("growain", "alice", limit=1)
    assert page.cursor is not None

    with pytest.raises(InvalidCursor):
        await history.list_conversations("growain", "mallory", limit=1, cursor=page.cursor)
    with pytest.raises(InvalidCursor):
        await history.list_audit("growain", cursor=page.cursor)
    with pytest.raises(InvalidCursor):
        await history.list_conversations("growain", "alice", cursor="not a cursor!")
    with pytest.raises(ValueError, match="limit"):
        await history.list_conversations("growain", "alice", limit=0)


async def test_ensure_schema_is_idempotent(history: HistoryStore) -> None:
    await history.ensure_schema()
    await history.write_turns([make_turn("c1")])
    await history.ensure_schema()
    assert await history.get_conversation("growain", "alice", "c1") is not None
