"""Every budget key the scripts make has a TTL, whatever the order of calls.

A reservation sets a period key's TTL only when it finds the key new (a key that exists
had its TTL set by the call that made it), so this checks that claim over random
sequences of reservations (limited and unlimited scopes, shrinking ones, reused request
ids), settlements (of nothing, late, twice), reads, the clock moving past leases and
periods, and scope keys vanishing as if the server had expired them.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from budgets import BudgetLedger, BudgetLimits, RequestIdReused, ReservationRequest
from budgets.keys import PERIOD_MARGIN_S
from memory.redis_client import RedisClient
from tests.budgets.conftest import UNLIMITED_LIMITS, ManualClock

LIMITS = [
    UNLIMITED_LIMITS,
    BudgetLimits(300, 1000, 2000, 400, 0.5),
    BudgetLimits(100, -1, 500, -1, 0.8),
    BudgetLimits(-1, 200, -1, 150),
    BudgetLimits(0, 0, 0, 0),
]
BRANDS, USERS, CONVERSATIONS = ("b1", "b2"), ("u1", "u2", "u-3"), ("c1", "c2", "c3")
STEPS = 250


# Keys that would live forever, in one round trip. An outstanding lease is the exception by
# design: its record ('r ...') leaves with it (released, settled or taken back), and the
# brand's set of them (a ZSET) empties, and so goes, as they do. A released or settled
# record ('x ...', 's') is kept a while, never for good.
WITHOUT_TTL = """
local found = {}
for _, key in ipairs(redis.call('KEYS', '*')) do
  if redis.call('TTL', key) == -1 then
    local kind = redis.call('TYPE', key)['ok']
    local outstanding = kind == 'string' and string.sub(redis.call('GET', key), 1, 2) == 'r '
    if kind ~= 'zset' and not outstanding then found[#found + 1] = key end
  end
end
return found
"""


async def keys_without_ttl(redis: RedisClient) -> list[bytes]:
    found: list[bytes] = await redis.eval(WITHOUT_TTL, 0)
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_no_budget_key_is_left_without_a_ttl(
        seed: int, ledger: BudgetLedger, clock: ManualClock, any_redis: RedisClient) -> None:
    rnd = random.Random(seed)
    made: list[tuple[str, str]] = []  # (brand, request id) of every reservation asked
    start = clock.now
    for step in range(STEPS):
        op = rnd.random()
        if op < 0.35:
            request_id = f"r{step}" if rnd.random() < 0.95 or not made else rnd.choice(made)[1]
            tokens = rnd.randint(0, 80)
            brand = rnd.choice(BRANDS)
            with contextlib.suppress(RequestIdReused):  # a reused id, sometimes on purpose
                await ledger.reserve(ReservationRequest(
                    brand=brand, user_id=rnd.choice(USERS),
                    conversation_id=rnd.choice(CONVERSATIONS), request_id=request_id,
                    tokens=tokens, limits=rnd.choice(LIMITS),
                    least_tokens=rnd.randint(0, tokens) if rnd.random() < 0.3 else 0))
            made.append((brand, request_id))
        elif op < 0.65:
            brand, request_id = rnd.choice(made) if made else ("b1", "never")
            await ledger.settle(brand=brand, request_id=request_id,
                                actual_tokens=rnd.choice([0, rnd.randint(0, 120)]),
                                cost_usd=rnd.choice([0.0, 0.001, 0.25]))
        elif op < 0.80:
            seconds = rnd.choice([1, 30, 121, 600, 86400, 3 * 86400])
            if clock.now + seconds < start + PERIOD_MARGIN_S - 86400:  # keys' own margin
                clock.advance(seconds)
        elif op < 0.90:
            brand = rnd.choice(BRANDS)
            await ledger.usage(brand, rnd.choice(USERS))
            await ledger.conversation_remaining(brand, rnd.choice(CONVERSATIONS), 400)
        else:  # a scope key the server expired or evicted
            scopes = sorted(k.decode() for k in await any_redis.keys("*") if b":lease" not in k)
            if scopes:
                await any_redis.delete(rnd.choice(scopes))
        assert await keys_without_ttl(any_redis) == [], f"after step {step}"
