"""DynamoDB batch calls with their retry loops: ``BatchWriteItem`` and ``BatchGetItem``.

DynamoDB may accept only part of a batch and hand the rest back (``UnprocessedItems`` /
``UnprocessedKeys``) when a partition is throttled; those are re-sent with exponential
backoff until done or out of attempts (:class:`UnprocessedItemsError`). Throttling errors
on the call itself are retried by botocore's own retry handler.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from memory.warm.dynamodb_items import Item

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

MAX_WRITE_BATCH = 25
MAX_GET_BATCH = 100
MAX_ATTEMPTS = 8


class UnprocessedItemsError(RuntimeError):
    """DynamoDB kept returning unprocessed items after every retry."""


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 2.0,
                  jitter: float = 1.0) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential, capped, ``jitter`` in [0, 1]
    scales it down to half at most (equal jitter)."""
    delay = min(cap, base * 2.0**attempt)
    return delay * (0.5 + 0.5 * jitter)


def put_request(item: Item) -> dict[str, Any]:
    return {"PutRequest": {"Item": item}}


def delete_request(key: Item) -> dict[str, Any]:
    return {"DeleteRequest": {"Key": key}}


def _request_key(request: dict[str, Any]) -> tuple[str, str]:
    body = request.get("PutRequest", {}).get("Item") or request["DeleteRequest"]["Key"]
    return body["PK"]["S"], body["SK"]["S"]


def unique_requests(requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One request per key (the last wins): DynamoDB rejects a batch naming a key twice."""
    return list({_request_key(r): r for r in requests}.values())


async def batch_write(client: Any, table: str, requests: Sequence[dict[str, Any]], *,
                      max_attempts: int = MAX_ATTEMPTS, sleep: Sleep = asyncio.sleep) -> None:
    """Send ``requests`` in batches of 25, re-sending unprocessed items with backoff."""
    for chunk in chunked(unique_requests(requests), MAX_WRITE_BATCH):
        pending: dict[str, Any] = {table: chunk}
        for attempt in range(max_attempts):
            response = await client.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                break
            await sleep(backoff_delay(attempt, jitter=random.random()))
        else:
            left = sum(len(v) for v in pending.values())
            raise UnprocessedItemsError(f"{left} write requests still unprocessed on {table}")


async def batch_get(client: Any, table: str, keys: Sequence[Item], *,
                    max_attempts: int = MAX_ATTEMPTS, sleep: Sleep = asyncio.sleep) -> list[Item]:
    """The items at ``keys`` (missing ones skipped, order not kept), 100 keys a call."""
    found: list[Item] = []
    for chunk in chunked(keys, MAX_GET_BATCH):
        pending: dict[str, Any] = {table: {"Keys": chunk}}
        for attempt in range(max_attempts):
            response = await client.batch_get_item(RequestItems=pending)
            found.extend(response.get("Responses", {}).get(table, []))
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            await sleep(backoff_delay(attempt, jitter=random.random()))
        else:
            raise UnprocessedItemsError(f"keys still unprocessed on {table}")
    return found
