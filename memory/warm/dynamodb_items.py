"""The DynamoDB single-table layout of warm history: keys, items and the table definition.

Pure functions only (no I/O), so the layout can be read and tested in one place.

One table, every key component escaped (``%`` → ``%25``, ``#`` → ``%23``) so keys stay
unambiguous whatever a brand or user id contains; ``{t}`` is epoch seconds as
``%017.6f`` (sorts as text).

| item | PK | SK | other keys |
| --- | --- | --- | --- |
| conversation meta | ``B#{brand}#U#{user}`` | ``C#{conv}`` | GSI1, GSI2 |
| message | ``B#{brand}#U#{user}#C#{conv}`` | ``M#{t}#{turn}#{n}`` (n 0 user, 1 assistant) | |
| audit entry | ``B#{brand}#AUDIT`` | ``A#{t}#{turn}`` | |

- GSI1 (projection: the meta's public attributes): ``GSI1PK = B#{brand}#U#{user}``,
  ``GSI1SK = {updated}#{conv}``: a user's conversations, newest first.
- GSI2 (projection: keys + ``ttl``): ``GSI2PK = B#{brand}``,
  ``GSI2SK = {updated}#{user}#{conv}``: a brand's conversations by time; the metas are
  then fetched with ``BatchGetItem``.
- Every item has ``ttl`` (epoch seconds, the table's TTL attribute); reads filter on it.
- Idempotency without transactions: the meta keeps the set of turn ids it has counted
  (``applied``, a string set; about 10,000 turns fit in an item). A batch of a
  conversation's turns is one ``UpdateItem`` whose condition says none of them was
  applied and the conversation is not deleted; when it fails, the old item (returned by
  ``ReturnValuesOnConditionCheckFailure``) says which turns to drop, or that the
  conversation is gone. Messages and audit entries are plain puts on deterministic keys,
  written before the meta update, so rewriting them is harmless and a crash in between
  is repaired by the replay.
- ``updated_at`` only moves forward: a batch older than the stored meta only adds its
  messages (the condition ``updated_at <= :updated`` picks the variant).
- Deleting a conversation replaces its meta with a tombstone (``deleted``, no index keys,
  ``ttl`` 30 days on) so a turn still in the write-behind outbox cannot bring it back,
  then deletes the messages partition (one query plus batched deletes). A writer whose
  meta update meets the tombstone deletes the messages it just wrote. Audit entries stay
  (the turns happened and were billed; they hold no content).
- The user id in every key scopes every read and delete to its tenant.
- Limits: every meta update of a brand lands on one GSI2 partition, and every audit entry
  on ``B#{brand}#AUDIT``; beyond roughly 1000 turns a second per brand, shard those keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from memory.records import StoredMessage, TurnRecord
from memory.warm.base import ConversationMeta, title_for

Item = dict[str, dict[str, Any]]

GSI_USER = "GSI1"
GSI_BRAND = "GSI2"


def part(value: str) -> str:
    """A key component: ``#`` and ``%`` escaped so joined keys stay unambiguous."""
    return value.replace("%", "%25").replace("#", "%23")


def stamp(t: float) -> str:
    return f"{t:017.6f}"


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: float) -> dict[str, str]:
    return {"N": str(Decimal(repr(value)))}


def user_pk(brand: str, user_id: str) -> str:
    return f"B#{part(brand)}#U#{part(user_id)}"


def conversation_pk(brand: str, user_id: str, conversation_id: str) -> str:
    return f"{user_pk(brand, user_id)}#C#{part(conversation_id)}"


def brand_pk(brand: str) -> str:
    return f"B#{part(brand)}"


def audit_pk(brand: str) -> str:
    return f"B#{part(brand)}#AUDIT"


def meta_key(brand: str, user_id: str, conversation_id: str) -> Item:
    return {"PK": s(user_pk(brand, user_id)), "SK": s(f"C#{part(conversation_id)}")}


def tombstone_item(brand: str, user_id: str, conversation_id: str, expires_at: int) -> Item:
    return {**meta_key(brand, user_id, conversation_id), "deleted": {"BOOL": True},
            "ttl": n(expires_at)}


def is_tombstone(item: Item) -> bool:
    return "deleted" in item


def message_items(turn: TurnRecord) -> list[Item]:
    pk = conversation_pk(turn.brand, turn.user_id, turn.conversation_id)
    items = []
    for index, message in enumerate((turn.user_message, turn.assistant_message)):
        sk = f"M#{stamp(message.created_at)}#{part(turn.turn_id)}#{index}"
        items.append({
            "PK": s(pk), "SK": s(sk), "role": s(message.role), "content": s(message.content),
            "created_at": n(message.created_at), "tokens": n(message.tokens),
            "turn_id": s(turn.turn_id), "ttl": n(turn.expires_at),
        })
    return items


def audit_item(turn: TurnRecord) -> Item:
    sk = f"A#{stamp(turn.created_at)}#{part(turn.turn_id)}"
    return {"PK": s(audit_pk(turn.brand)), "SK": s(sk),
            "data": s(orjson.dumps(turn.audit()).decode()), "ttl": n(turn.expires_at)}


def turn_items(turn: TurnRecord) -> list[Item]:
    """Everything a turn writes besides the meta update: its messages and its audit entry."""
    return [*message_items(turn), audit_item(turn)]


def meta_update(table: str, turns: Sequence[TurnRecord], *, advance: bool) -> dict[str, Any]:
    """``UpdateItem`` arguments counting new ``turns`` (one conversation, in order) into its meta.

    The condition fails if any of the turns was already applied or the conversation was
    deleted. ``advance``: the turns are the newest, so they move ``updated_at`` (with its
    index keys) and ``ttl``; a stale batch only adds its messages.
    """
    first, last = turns[0], turns[-1]
    brand, user_id, conv = first.brand, first.user_id, first.conversation_id
    moving = {"updated_at": ":updated", "#ttl": ":ttl", "GSI1PK": ":g1pk", "GSI1SK": ":g1sk",
              "GSI2PK": ":g2pk", "GSI2SK": ":g2sk"}
    sets = [f"{name} = {value}" if advance else f"{name} = if_not_exists({name}, {value})"
            for name, value in moving.items()]
    turn_ids = {f":t{i}": s(t.turn_id) for i, t in enumerate(turns)}
    condition = " AND ".join(["attribute_not_exists(deleted)",
                              *(f"NOT contains(applied, {name})" for name in turn_ids)])
    if advance:
        condition += " AND (attribute_not_exists(updated_at) OR updated_at <= :updated)"
    return {
        "TableName": table,
        "Key": meta_key(brand, user_id, conv),
        "UpdateExpression": (
            "SET brand = :brand, user_id = :user, conversation_id = :conv, "
            "created_at = if_not_exists(created_at, :created), "
            "title = if_not_exists(title, :title), " + ", ".join(sets)
            + " ADD message_count :count, applied :ids"
        ),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#ttl": "ttl"},
        "ExpressionAttributeValues": {
            ":brand": s(brand), ":user": s(user_id), ":conv": s(conv),
            ":created": n(first.created_at), ":title": s(title_for(first.user_message.content)),
            ":updated": n(last.created_at), ":ttl": n(max(t.expires_at for t in turns)),
            ":g1pk": s(user_pk(brand, user_id)),
            ":g1sk": s(f"{stamp(last.created_at)}#{part(conv)}"),
            ":g2pk": s(brand_pk(brand)),
            ":g2sk": s(f"{stamp(last.created_at)}#{part(user_id)}#{part(conv)}"),
            ":count": n(2 * len(turns)), ":ids": {"SS": [t.turn_id for t in turns]},
            **turn_ids,
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


@dataclass(frozen=True, slots=True)
class Retry:
    """What to send after a meta update's condition failed, judged from the stored item."""

    deleted: bool  # the conversation was deleted: drop its turns
    pending: list[TurnRecord]  # the turns not applied yet (empty: all were replays)
    advance: bool  # whether they are newer than the stored meta


def after_condition_failure(stored: Item | None, turns: Sequence[TurnRecord]) -> Retry:
    """Pure: from the meta as stored now, which of ``turns`` still need applying, and how."""
    if stored is None:  # deleted outright between the update and the read: try again
        return Retry(deleted=False, pending=list(turns), advance=True)
    if is_tombstone(stored):
        return Retry(deleted=True, pending=[], advance=False)
    applied = set(stored.get("applied", {}).get("SS", []))
    pending = [t for t in turns if t.turn_id not in applied]
    updated = stored.get("updated_at")
    advance = bool(pending) and (updated is None or float(updated["N"]) <= pending[-1].created_at)
    return Retry(deleted=False, pending=pending, advance=advance)


def meta_from_item(item: Item) -> ConversationMeta:
    summary = item.get("summary")
    return ConversationMeta(
        brand=item["brand"]["S"], user_id=item["user_id"]["S"],
        conversation_id=item["conversation_id"]["S"], title=item["title"]["S"],
        created_at=float(item["created_at"]["N"]), updated_at=float(item["updated_at"]["N"]),
        message_count=int(item["message_count"]["N"]), expires_at=int(item["ttl"]["N"]),
        summary=summary["S"] if summary else None,
        summary_covers=int(item.get("summary_covers", {"N": "0"})["N"]),
    )


def message_from_item(item: Item) -> StoredMessage:
    return StoredMessage(role=item["role"]["S"], content=item["content"]["S"],
                         created_at=float(item["created_at"]["N"]),
                         tokens=int(item["tokens"]["N"]))


def live(item: Item, now: float) -> bool:
    ttl = item.get("ttl")
    return ttl is None or float(ttl["N"]) > now


def _gsi(name: str, projection: dict[str, Any]) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": f"{name}PK", "KeyType": "HASH"},
                      {"AttributeName": f"{name}SK", "KeyType": "RANGE"}],
        "Projection": projection,
    }


PUBLIC_META_ATTRIBUTES = ["brand", "user_id", "conversation_id", "title", "created_at",
                          "updated_at", "message_count", "ttl", "summary", "summary_covers"]

GLOBAL_INDEXES = {
    GSI_USER: _gsi(GSI_USER, {"ProjectionType": "INCLUDE",
                              "NonKeyAttributes": PUBLIC_META_ATTRIBUTES}),
    GSI_BRAND: _gsi(GSI_BRAND, {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["ttl"]}),
}

KEY_ATTRIBUTES = ["PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK"]


def table_definition(table: str) -> dict[str, Any]:
    """``CreateTable`` arguments (on-demand); the TTL attribute is set separately."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"}
                                 for a in KEY_ATTRIBUTES],
        "KeySchema": [{"AttributeName": "PK", "KeyType": "HASH"},
                      {"AttributeName": "SK", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": list(GLOBAL_INDEXES.values()),
    }
