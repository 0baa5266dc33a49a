"""The turn gate over Redis: GCRA rate limits and Lua budget reservations (``budgets/``)."""

from __future__ import annotations

import asyncio

from budgets import (
    BudgetLedger,
    BudgetLimits,
    RateLimiter,
    Refused,
    ReservationRequest,
    Reserved,
)
from gateway.auth import Principal
from gateway.config import Brand, Plan
from gateway.errors import BudgetExceeded, RateLimited
from gateway.gates import Admission
from memory.pipelining import then
from providers.usage import Usage

_SCOPE_WORDS = {
    "user_day": "your daily token limit",
    "user_month": "your monthly token limit",
    "brand_month": "this service's monthly token budget",
    "conversation": "this conversation's token limit",
}


class BudgetGate:
    """Implements :class:`gateway.gates.TurnGate`."""

    def __init__(self, ledger: BudgetLedger, limiter: RateLimiter) -> None:
        self._ledger = ledger
        self._limiter = limiter

    @property
    def ledger(self) -> BudgetLedger:
        return self._ledger

    async def check_rate(self, principal: Principal, brand: Brand) -> None:
        decision = await self._limiter.check(
            brand=brand.name, user_id=principal.user_id,
            per_minute_per_user=brand.requests_per_minute_per_user,
            per_second_per_brand=brand.requests_per_second_per_brand)
        if not decision.allowed:
            who = "you are" if decision.scope == "user" else "this service is"
            raise RateLimited(f"too many requests: {who} over the request rate",
                              retry_after_ms=decision.retry_after_ms)

    def admit(self, principal: Principal, brand: Brand, plan: Plan, *,
              conversation_id: str, request_id: str, prompt_tokens: int,
              max_tokens: int) -> asyncio.Future[Admission]:
        """A future: the reservation's script is queued at once."""
        # One script: the answer's share is cut down to what a limited conversation has
        # left (at least one token, so that a spent conversation is refused by name).
        wanted = prompt_tokens + max_tokens

        def admitted(result: Reserved | Refused) -> Admission:
            if isinstance(result, Refused):
                raise _exceeded(result.scope)
            return Admission(request_id=request_id, brand=brand.name,
                             reserved_tokens=result.tokens,
                             max_tokens=max(1, result.tokens - prompt_tokens))

        return then(self._ledger.reserve(ReservationRequest(
            brand=brand.name, user_id=principal.user_id, conversation_id=conversation_id,
            request_id=request_id, tokens=wanted, least_tokens=min(wanted, prompt_tokens + 1),
            limits=BudgetLimits.for_plan(plan, brand))), admitted)

    def settle(self, principal: Principal, admission: Admission, *, usage: Usage,
               cost_usd: float) -> asyncio.Future[bool]:
        """A future: the settlement's script is queued at once."""
        return self._ledger.settle(brand=admission.brand, request_id=admission.request_id,
                                   actual_tokens=usage.total_tokens, cost_usd=cost_usd)


def _exceeded(scope: str) -> BudgetExceeded:
    return BudgetExceeded(f"budget exceeded: {_SCOPE_WORDS.get(scope, scope)} is used up",
                          scope=scope)
