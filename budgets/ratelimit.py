"""Request rate limits: per user per minute and per brand per second, checked together.

GCRA (the generic cell rate algorithm) in one Lua script (``lua/rate_limit.lua``): a
limit of ``L`` requests per period allows a burst of ``L`` and then one request every
``period / L``. A request counts against both limits only if both admit it; a refused
request changes nothing and answers how long to wait. Time comes from the injected clock
(epoch microseconds passed into the script), never from the server.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from budgets.keys import BrandKeys, Clock
from budgets.scripts import script_source
from memory.pipelining import AutoPipeline
from memory.redis_client import RedisClient

RateScope = Literal["user", "brand"]
_SCOPES: dict[int, RateScope] = {1: "user", 2: "brand"}
_US_PER_MINUTE = 60_000_000
_US_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    """``allowed``, or which limit refused and how many milliseconds until it would admit."""

    allowed: bool
    retry_after_ms: int = 0
    scope: RateScope | None = None


def emission_interval_us(period_us: int, limit: int) -> int:
    """Microseconds between requests at ``limit`` per period, rounded up (never too many)."""
    if limit < 1:
        raise ValueError("a rate limit is at least 1 request per period")
    return math.ceil(period_us / limit)


class RateLimiter:
    """Per-user-per-minute and per-brand-per-second limits over one GCRA script."""

    def __init__(self, redis: RedisClient, *, clock: Clock = time.time,
                 pipeline: AutoPipeline | None = None) -> None:
        self._clock = clock
        self._runner = pipeline or AutoPipeline(redis)
        self._script = self._runner.register(script_source("rate_limit.lua"))

    async def check(self, *, brand: str, user_id: str, per_minute_per_user: int,
                    per_second_per_brand: int) -> RateDecision:
        """Admit one request of ``user_id`` in ``brand`` if both limits allow it."""
        keys = BrandKeys.of(brand)
        reply = await self._runner.run(
            self._script, [keys.user_rate(user_id), keys.brand_rate],
            [int(self._clock() * _US_PER_SECOND),
             emission_interval_us(_US_PER_MINUTE, per_minute_per_user), per_minute_per_user,
             emission_interval_us(_US_PER_SECOND, per_second_per_brand), per_second_per_brand],
        )
        if int(reply[0]) == 1:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after_ms=max(1, math.ceil(int(reply[1]) / 1000)),
                            scope=_SCOPES[int(reply[2])])
