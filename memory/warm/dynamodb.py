"""Warm history on DynamoDB: one table, single-table design (see ``dynamodb_items``).

The store keeps one aioboto3 client open from :meth:`DynamoHistory.start` to
:meth:`DynamoHistory.aclose`. Credentials and endpoint come from the standard AWS chain
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_DYNAMODB`` reach moto or LocalStack); the region
is given by the caller (``open_history`` reads ``AWS_REGION``).

Listings fill a page by following ``LastEvaluatedKey`` (a query returns at most 1 MB, and
the TTL filter may drop items) and hand the last key back as an opaque cursor. DynamoDB
deletes expired items lazily, so every read filters on ``ttl`` against the injected clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from botocore.exceptions import ClientError

from memory.aws import HeldClient, error_code
from memory.records import StoredMessage, TurnRecord
from memory.warm import dynamodb_items as layout
from memory.warm.base import (
    TOMBSTONE_TTL_S,
    Clock,
    ConversationMeta,
    InvalidCursor,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    group_by_conversation,
    unique_turns,
)
from memory.warm.dynamodb_batch import (
    batch_get,
    batch_write,
    chunked,
    delete_request,
    put_request,
)
from memory.warm.dynamodb_items import Item

# Turns counted by one conditional meta update (bounds the condition expression's size).
TURNS_PER_UPDATE = 25
UPDATE_ATTEMPTS = 6
TTL_NAME = {"#ttl": "ttl"}


class DynamoHistory:
    """:class:`~memory.warm.base.HistoryStore` on one DynamoDB table."""

    def __init__(self, table: str, *, region: str = "us-east-1",
                 endpoint_url: str | None = None, clock: Clock = time.time,
                 concurrency: int = 8) -> None:
        self.table = table
        self._clock = clock
        self._concurrency = concurrency
        self._held = HeldClient("dynamodb", region=region, endpoint_url=endpoint_url,
                                owner="DynamoHistory")

    async def start(self) -> DynamoHistory:
        await self._held.start()
        return self

    async def aclose(self) -> None:
        await self._held.aclose()

    @property
    def client(self) -> Any:
        return self._held.client

    # -- schema ---------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the table, its GSIs and its TTL setting when missing (idempotent)."""
        description = await self._describe_or_create()
        present = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
        for name, index in layout.GLOBAL_INDEXES.items():
            if name not in present:
                await self._add_index(index)
        ttl = await self.client.describe_time_to_live(TableName=self.table)
        if ttl["TimeToLiveDescription"]["TimeToLiveStatus"] not in ("ENABLED", "ENABLING"):
            await self.client.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})

    async def _describe_or_create(self) -> dict[str, Any]:
        try:
            return await self._wait_active()
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
        try:
            await self.client.create_table(**layout.table_definition(self.table))
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # created concurrently
                raise
        return await self._wait_active()

    async def _wait_active(self, timeout_s: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            table = (await self.client.describe_table(TableName=self.table))["Table"]
            indexes = table.get("GlobalSecondaryIndexes", [])
            if table["TableStatus"] == "ACTIVE" and all(
                    i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes):
                return dict(table)
            if time.monotonic() > deadline:
                raise TimeoutError(f"table {self.table} not ACTIVE after {timeout_s}s")
            await asyncio.sleep(1.0)

    async def _add_index(self, index: dict[str, Any]) -> None:
        names = {k["AttributeName"] for k in index["KeySchema"]}
        await self.client.update_table(
            TableName=self.table,
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in names],
            GlobalSecondaryIndexUpdates=[{"Create": index}])
        await self._wait_active()

    # -- writes ---------------------------------------------------------------------

    async def write_turns(self, turns: Sequence[TurnRecord]) -> list[TurnRecord]:
        """Write turns idempotently; returns those accepted (not of deleted conversations).

        Messages and audit entries go first, then the metas. A conversation deleted at any
        point meanwhile ends up without these messages: either its delete removes them, or
        its tombstone fails the meta update and they are removed here.
        """
        ordered = unique_turns(turns)
        puts = [put_request(i) for turn in ordered for i in layout.turn_items(turn)]
        await batch_write(self.client, self.table, puts)
        groups = list(group_by_conversation(ordered).values())
        limiter = asyncio.Semaphore(self._concurrency)

        async def record(group: list[TurnRecord]) -> bool:
            async with limiter:
                return await self._record_conversation(group)

        async with asyncio.TaskGroup() as tasks:
            outcomes = [tasks.create_task(record(g)) for g in groups]
        kept = [o.result() for o in outcomes]
        rejected = [t for g, ok in zip(groups, kept, strict=True) if not ok for t in g]
        if rejected:
            doomed = [delete_request({"PK": i["PK"], "SK": i["SK"]})
                      for turn in rejected for i in layout.message_items(turn)]
            await batch_write(self.client, self.table, doomed)
        return [t for g, ok in zip(groups, kept, strict=True) if ok for t in g]

    async def _record_conversation(self, turns: list[TurnRecord]) -> bool:
        """Count new turns into the conversation's meta; False if it was deleted."""
        for chunk in chunked(turns, TURNS_PER_UPDATE):
            if not await self._record_chunk(chunk):
                return False
        return True

    async def _record_chunk(self, turns: list[TurnRecord]) -> bool:
        pending, advance = turns, True
        for _ in range(UPDATE_ATTEMPTS):
            try:
                await self.client.update_item(
                    **layout.meta_update(self.table, pending, advance=advance))
                return True
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                stored = exc.response.get("Item") or await self._meta_item(pending[0])
            retry = layout.after_condition_failure(stored, pending)
            if retry.deleted:
                return False
            if not retry.pending:
                return True
            pending, advance = retry.pending, retry.advance
        raise RuntimeError(f"meta update on {self.table} kept failing its condition")

    async def _meta_item(self, turn: TurnRecord) -> Item | None:
        response = await self.client.get_item(
            TableName=self.table, ConsistentRead=True,
            Key=layout.meta_key(turn.brand, turn.user_id, turn.conversation_id))
        item: Item | None = response.get("Item")
        return item

    async def save_summary(self, brand: str, user_id: str, conversation_id: str, summary: str,
                           covers_messages: int) -> bool:
        """Store the rolling summary on the meta; False if the conversation is not there."""
        try:
            await self.client.update_item(
                TableName=self.table, Key=layout.meta_key(brand, user_id, conversation_id),
                UpdateExpression="SET summary = :s, summary_covers = :c, summary_at = :now",
                ConditionExpression=(
                    "attribute_exists(PK) AND attribute_not_exists(deleted) AND #ttl > :now"),
                ExpressionAttributeNames=TTL_NAME,
                ExpressionAttributeValues={":s": layout.s(summary), ":c": layout.n(covers_messages),
                                           ":now": layout.n(self._clock())})
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str) -> bool:
        """Replace the meta (and summary) by a tombstone, then delete the messages."""
        now = self._clock()
        tombstone = layout.tombstone_item(brand, user_id, conversation_id,
                                          int(now) + TOMBSTONE_TTL_S)
        old = await self.client.put_item(TableName=self.table, Item=tombstone,
                                         ReturnValues="ALL_OLD")
        keys = await self._partition_keys(layout.conversation_pk(brand, user_id, conversation_id))
        await batch_write(self.client, self.table, [delete_request(k) for k in keys])
        meta = old.get("Attributes")
        return bool(meta) and not layout.is_tombstone(meta) and layout.live(meta, now)

    async def _partition_keys(self, pk: str) -> list[Item]:
        keys: list[Item] = []
        query: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": layout.s(pk)},
            "ProjectionExpression": "PK, SK", "ConsistentRead": True,
        }
        while True:
            response = await self.client.query(**query)
            keys.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return keys
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- reads ----------------------------------------------------------------------

    async def get_conversation(self, brand: str, user_id: str,
                               conversation_id: str) -> ConversationMeta | None:
        response = await self.client.get_item(
            TableName=self.table, Key=layout.meta_key(brand, user_id, conversation_id),
            ConsistentRead=True)
        item = response.get("Item")
        if not item or layout.is_tombstone(item) or not layout.live(item, self._clock()):
            return None
        return layout.meta_from_item(item)

    async def list_conversations(self, brand: str, user_id: str, *, limit: int = 50,
                                 cursor: str | None = None) -> Page[ConversationMeta]:
        """The user's conversations, most recently updated first."""
        check_limit(limit)
        pk = layout.user_pk(brand, user_id)
        query = self._query(index=layout.GSI_USER, key="GSI1PK = :pk", values={":pk": layout.s(pk)},
                            forward=False)
        found, next_cursor = await self._fill(query, limit=limit, cursor=cursor,
                                              scope=f"user-conversations:{pk}", pk=("GSI1PK", pk))
        return Page([layout.meta_from_item(i) for i in found], next_cursor)

    async def list_brand_conversations(self, brand: str, *, since: float = 0.0, limit: int = 100,
                                       cursor: str | None = None) -> Page[ConversationMeta]:
        """The brand's conversations updated at or after ``since``, most recent first."""
        check_limit(limit)
        pk = layout.brand_pk(brand)
        query = self._query(index=layout.GSI_BRAND, key="GSI2PK = :pk AND GSI2SK >= :since",
                            values={":pk": layout.s(pk), ":since": layout.s(layout.stamp(since))},
                            forward=False)
        found, next_cursor = await self._fill(
            query, limit=limit, cursor=cursor, scope=f"brand-conversations:{pk}:{since!r}",
            pk=("GSI2PK", pk))
        keys = [{"PK": i["PK"], "SK": i["SK"]} for i in found]
        metas = {(m["PK"]["S"], m["SK"]["S"]): m
                 for m in await batch_get(self.client, self.table, keys)}
        now = self._clock()
        ordered = [metas.get((k["PK"]["S"], k["SK"]["S"])) for k in keys]
        return Page([layout.meta_from_item(m) for m in ordered
                     if m and not layout.is_tombstone(m) and layout.live(m, now)], next_cursor)

    async def messages(self, brand: str, user_id: str, conversation_id: str, *,
                       limit: int | None = None) -> list[StoredMessage]:
        """Oldest to newest; with ``limit``, the last ``limit`` messages."""
        check_limit(limit, allow_none=True)
        pk = layout.conversation_pk(brand, user_id, conversation_id)
        query = self._query(key="PK = :pk AND begins_with(SK, :m)",
                            values={":pk": layout.s(pk), ":m": layout.s("M#")},
                            forward=limit is None, consistent=True)
        if limit is None:
            found = await self._all(query)
        else:
            found, _ = await self._fill(query, limit=limit, cursor=None, scope="", pk=("PK", pk))
            found.reverse()
        return [layout.message_from_item(i) for i in found]

    async def list_audit(self, brand: str, *, since: float = 0.0, limit: int = 100,
                         cursor: str | None = None) -> Page[dict[str, Any]]:
        """The brand's audit entries from ``since`` on, oldest first."""
        check_limit(limit)
        pk = layout.audit_pk(brand)
        query = self._query(key="PK = :pk AND SK >= :since",
                            values={":pk": layout.s(pk),
                                    ":since": layout.s(f"A#{layout.stamp(since)}")},
                            forward=True)
        found, next_cursor = await self._fill(query, limit=limit, cursor=cursor,
                                              scope=f"audit:{pk}:{since!r}", pk=("PK", pk))
        return Page([orjson.loads(i["data"]["S"]) for i in found], next_cursor)

    def _query(self, *, key: str, values: Item, forward: bool, index: str | None = None,
               consistent: bool = False) -> dict[str, Any]:
        query: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": key,
            "FilterExpression": "#ttl > :now", "ExpressionAttributeNames": TTL_NAME,
            "ExpressionAttributeValues": {**values, ":now": layout.n(self._clock())},
            "ScanIndexForward": forward,
        }
        if index:
            query["IndexName"] = index
        else:
            query["ConsistentRead"] = consistent
        return query

    async def _all(self, query: dict[str, Any]) -> list[Item]:
        found: list[Item] = []
        while True:
            response = await self.client.query(**query)
            found.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return found
            query = {**query, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    async def _fill(self, query: dict[str, Any], *, limit: int, cursor: str | None, scope: str,
                    pk: tuple[str, str]) -> tuple[list[Item], str | None]:
        """Up to ``limit`` items, following ``LastEvaluatedKey`` until the page is full."""
        start = self._start_key(cursor, scope, pk) if cursor else None
        found: list[Item] = []
        while True:
            page = {**query, "Limit": limit - len(found)}
            if start:
                page["ExclusiveStartKey"] = start
            response = await self.client.query(**page)
            found.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start or len(found) >= limit:
                return found, encode_cursor(scope, start) if start else None

    @staticmethod
    def _start_key(cursor: str, scope: str, pk: tuple[str, str]) -> Item:
        key = decode_cursor(cursor, scope)
        name, value = pk
        if not isinstance(key, dict) or key.get(name) != {"S": value}:
            raise InvalidCursor("cursor does not belong to this listing")
        return key
