"""The turn gate: rate limits and budget reservations, asked before any provider call.

The service depends on this Protocol only; ``gateway.budget_gate.BudgetGate`` implements it with
the Redis Lua scripts.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from gateway.auth import Principal
from gateway.config import Brand, Plan
from providers.usage import Usage


@dataclass(frozen=True, slots=True)
class Admission:
    """A granted reservation: the turn may use up to ``max_tokens`` of output."""

    request_id: str
    brand: str
    reserved_tokens: int
    max_tokens: int


class TurnGate(Protocol):
    async def check_rate(self, principal: Principal, brand: Brand) -> None:
        """Raise ``RateLimited`` when the user or the brand is over its request rate."""
        ...

    def admit(self, principal: Principal, brand: Brand, plan: Plan, *,
              conversation_id: str, request_id: str, prompt_tokens: int,
              max_tokens: int) -> Awaitable[Admission]:
        """Reserve prompt + max_tokens (the answer's share capped by what the conversation
        has left, at least one token) in every scope at once, or raise
        ``BudgetExceeded`` naming the first scope that overflows (a coroutine, or a future
        of a call already made)."""
        ...

    def settle(self, principal: Principal, admission: Admission, *, usage: Usage,
               cost_usd: float) -> Awaitable[object]:
        """Replace the reservation with the actual usage (idempotent per request id): a
        coroutine, or a future of a call already made."""
        ...
