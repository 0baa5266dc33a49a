"""DynamoDB specifics: batch retries (fake client), key layout, condition handling, 1 MB pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memory.warm import dynamodb_items as layout
from memory.warm import open_history
from memory.warm.dynamodb import DynamoHistory
from memory.warm.dynamodb_batch import (
    UnprocessedItemsError,
    backoff_delay,
    batch_get,
    batch_write,
    put_request,
)
from tests.memory.conftest import unique_name
from tests.memory.factories import START, FakeClock, make_turn


class FakeBatchClient:
    """Records batch calls; hands back the last item of the first ``stingy`` calls unprocessed."""

    def __init__(self, stingy: int = 1) -> None:
        self.stingy = stingy
        self.writes: list[list[dict[str, Any]]] = []
        self.gets: list[list[dict[str, Any]]] = []

    async def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        [(table, requests)] = RequestItems.items()
        self.writes.append(requests)
        if self.stingy:
            self.stingy -= 1
            return {"UnprocessedItems": {table: requests[-1:]}}
        return {"UnprocessedItems": {}}

    async def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        [(table, request)] = RequestItems.items()
        keys = request["Keys"]
        self.gets.append(keys)
        served, left = (keys[:-1], keys[-1:]) if self.stingy else (keys, [])
        self.stingy = max(0, self.stingy - 1)
        return {"Responses": {table: [{**k, "found": {"BOOL": True}} for k in served]},
                "UnprocessedKeys": {table: {"Keys": left}} if left else {}}


def item(i: int) -> dict[str, Any]:
    return {"PK": {"S": "p"}, "SK": {"S": f"s{i:03d}"}}


async def no_sleep(_: float) -> None:
    return None


async def test_batch_write_splits_into_25s_and_retries_unprocessed_items() -> None:
    client = FakeBatchClient(stingy=1)
    await batch_write(client, "t", [put_request(item(i)) for i in range(60)], sleep=no_sleep)

    assert [len(call) for call in client.writes] == [25, 1, 25, 10]
    assert client.writes[1] == client.writes[0][-1:]  # the unprocessed one, sent again
    sent = {r["PutRequest"]["Item"]["SK"]["S"] for call in client.writes for r in call}
    assert len(sent) == 60


async def test_batch_write_gives_up_after_max_attempts() -> None:
    client = FakeBatchClient(stingy=100)
    with pytest.raises(UnprocessedItemsError, match="1 write requests"):
        await batch_write(client, "t", [put_request(item(0))], max_attempts=3, sleep=no_sleep)
    assert len(client.writes) == 3


async def test_batch_write_sends_each_key_once() -> None:
    client = FakeBatchClient(stingy=0)
    await batch_write(client, "t", [put_request(item(1)), put_request(item(1))], sleep=no_sleep)
    assert [len(call) for call in client.writes] == [1]


async def test_batch_get_retries_unprocessed_keys() -> None:
    client = FakeBatchClient(stingy=1)
    found = await batch_get(client, "t", [item(i) for i in range(150)], sleep=no_sleep)
    assert [len(call) for call in client.gets] == [100, 1, 50]
    assert sorted(f["SK"]["S"] for f in found) == [f"s{i:03d}" for i in range(150)]


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert [backoff_delay(a, base=0.05, cap=0.3) for a in range(4)] == [0.05, 0.1, 0.2, 0.3]
    assert backoff_delay(2, base=0.05, cap=1.0, jitter=0.0) == pytest.approx(0.1)


def test_keys_escape_separators() -> None:
    assert layout.conversation_pk("b", "a#C#b", "c") != layout.conversation_pk("b", "a", "b#C#c")
    assert layout.user_pk("x%23", "u") == "B#x%2523#U#u"


def test_condition_failure_is_read_from_the_stored_meta() -> None:
    turns = [make_turn("c1", at=START + i) for i in range(3)]
    stored = {"applied": {"SS": [turns[0].turn_id]}, "updated_at": {"N": str(START + 1.5)}}

    retry = layout.after_condition_failure(stored, turns)
    assert retry.pending == turns[1:] and retry.advance and not retry.deleted
    late = layout.after_condition_failure({**stored, "updated_at": {"N": str(START + 9)}}, turns)
    assert late.pending == turns[1:] and not late.advance
    gone = layout.after_condition_failure({"deleted": {"BOOL": True}}, turns)
    assert gone.deleted and gone.pending == []
    replay = layout.after_condition_failure({"applied": {"SS": [t.turn_id for t in turns]}}, turns)
    assert replay.pending == [] and not replay.deleted


@pytest.fixture
async def dynamo(aws: str, clock: FakeClock) -> Any:
    store = DynamoHistory(unique_name("layout"), clock=clock)
    await store.start()
    await store.ensure_schema()
    yield store
    await store.aclose()


async def test_messages_past_one_megabyte_pages(dynamo: DynamoHistory) -> None:
    big = "x" * 150_000  # 2 messages a turn: 12 turns are 3.6 MB, several query pages
    turns = [make_turn("c1", at=START + i, text=f"q{i} {big}", answer=big) for i in range(12)]
    await dynamo.write_turns(turns)

    everything = await dynamo.messages("growain", "alice", "c1")
    assert len(everything) == 24
    assert [m.content[:3] for m in everything[::2]] == [f"q{i} "[:3] for i in range(12)]
    last = await dynamo.messages("growain", "alice", "c1", limit=15)
    assert last == everything[-15:]


async def test_overlapping_batches_count_each_turn_once(dynamo: DynamoHistory) -> None:
    # Overlaps take the condition-failure path. (Run one after another: moto's server does
    # not make a conditional update atomic across threads; DynamoDB does.)
    turns = [make_turn("c1", at=START + i) for i in range(10)]
    await dynamo.write_turns(turns[:6])
    await dynamo.write_turns(turns[4:])
    await dynamo.write_turns(turns[::2])
    meta = await dynamo.get_conversation("growain", "alice", "c1")
    assert meta is not None and meta.message_count == 20
    assert meta.updated_at == START + 9


async def test_the_table_has_ttl_and_both_indexes(dynamo: DynamoHistory) -> None:
    table = (await dynamo.client.describe_table(TableName=dynamo.table))["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {"GSI1", "GSI2"}
    ttl = await dynamo.client.describe_time_to_live(TableName=dynamo.table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"


async def test_a_relative_sqlite_url_creates_its_folder(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_history("sqlite:///./.chatgate/history.db")
    try:
        await store.write_turns([make_turn("c1", at=1e10)])
        assert await store.get_conversation("growain", "alice", "c1") is not None
    finally:
        await store.aclose()
    assert (tmp_path / ".chatgate" / "history.db").is_file()
    with pytest.raises(ValueError, match="unsupported history URL"):
        await open_history("postgres://x")
