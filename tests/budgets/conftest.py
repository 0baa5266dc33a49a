"""Budget test fixtures: a hand-moved clock, ledgers over the real or embedded Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import fakeredis
import pytest

from budgets import BudgetAlert, BudgetLedger, BudgetLimits, ReservationRequest
from memory.redis_client import RedisClient, connect_redis, is_embedded

# A Saturday in late November: a day and a month boundary are both near.
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
T = TypeVar("T")
UNLIMITED_LIMITS = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=-1)


class ManualClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


class RecordingSink:
    """An AlertSink that remembers what it was told."""

    def __init__(self) -> None:
        self.alerts: list[BudgetAlert] = []

    async def budget_alert(self, alert: BudgetAlert) -> None:
        self.alerts.append(alert)


async def gather_bounded(coros: Iterable[Awaitable[T]], limit: int = 64) -> list[T]:
    """``asyncio.gather`` with at most ``limit`` in flight (a client's pool holds 100)."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def request(request_id: str, tokens: int, limits: BudgetLimits = UNLIMITED_LIMITS, *,
            brand: str = "growain", user_id: str = "alice",
            conversation_id: str = "conv-1") -> ReservationRequest:
    return ReservationRequest(brand=brand, user_id=user_id, conversation_id=conversation_id,
                              request_id=request_id, tokens=tokens, limits=limits)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def ledger(any_redis: RedisClient, clock: ManualClock, sink: RecordingSink) -> BudgetLedger:
    return BudgetLedger(any_redis, clock=clock, alerts=sink)


@pytest.fixture
async def client_factory(
    any_redis_url: str, any_redis: RedisClient
) -> AsyncIterator[Callable[[int], list[RedisClient]]]:
    """Several independent clients (each with its own connection pool) of one server.

    Embedded: fakeredis keys its in-process servers by ``host``, so more clients of the
    ``any_redis`` server are made with its host (``connect_redis`` would make new servers).
    """
    made: list[RedisClient] = []

    def connect() -> RedisClient:
        if not is_embedded(any_redis_url):
            return connect_redis(any_redis_url)
        host = any_redis.connection_pool.connection_kwargs["host"]
        client: RedisClient = fakeredis.FakeAsyncRedis(host=host)
        return client

    def make(count: int) -> list[RedisClient]:
        clients = [connect() for _ in range(count)]
        made.extend(clients)
        return clients

    yield make
    for client in made:
        await client.aclose()
