"""Token budgets and rate limits: Redis Lua scripts and the thin Python that calls them.

- :class:`BudgetLedger` (``ledger.py``): reserve a turn's tokens on user day, user
  month, brand month and conversation scopes at once; settle with the actual usage;
  read usage. Leases release unsettled reservations inside the scripts.
- :class:`RateLimiter` (``ratelimit.py``): requests per minute per user and per second
  per brand, GCRA, both checked in one script.
- ``pricing.py``: USD cost of a turn; ``alerts.py``: the once-per-month budget alert.
- ``keys.py``: the Redis key layout (every key of a brand under the hash tag
  ``{brand}``) and UTC periods; ``scripts.py`` and ``lua/``: the scripts, run by SHA.

A turn, in order: ``RateLimiter.check`` (refused: ``rate_limited`` with its
``retry_after_ms``); ``BudgetLedger.reserve`` of prompt tokens + ``max_tokens`` under a
fresh request id, the answer's share cut down to what a limited conversation has left
(``least_tokens``; ``Refused``: ``budget_exceeded`` with its ``scope``); the provider
call; then, whatever
happened (done, cancelled, failed, client gone), ``BudgetLedger.settle`` with the tokens
actually used and ``pricing.cost_usd``. A turn that never settles is released when its
lease runs out. ``BudgetLedger.usage`` and ``brand_usage`` answer the usage endpoints.
"""

from budgets.alerts import (
    AlertPublisher,
    AlertSink,
    BudgetAlert,
    BudgetAlerter,
    SnsPublisher,
    WebhookPublisher,
    publisher_from_settings,
)
from budgets.keys import BrandKeys, Clock, Periods
from budgets.ledger import (
    SCOPES,
    UNLIMITED_REMAINING,
    BrandMonthUsage,
    BudgetLedger,
    BudgetLimits,
    Refused,
    RequestIdReused,
    ReservationRequest,
    Reserved,
    Scope,
    ScopeUsage,
    UsageView,
)
from budgets.pricing import cost_usd
from budgets.ratelimit import RateDecision, RateLimiter, RateScope

__all__ = [
    "SCOPES",
    "UNLIMITED_REMAINING",
    "AlertPublisher",
    "AlertSink",
    "BrandKeys",
    "BrandMonthUsage",
    "BudgetAlert",
    "BudgetAlerter",
    "BudgetLedger",
    "BudgetLimits",
    "Clock",
    "Periods",
    "RateDecision",
    "RateLimiter",
    "RateScope",
    "Refused",
    "RequestIdReused",
    "ReservationRequest",
    "Reserved",
    "Scope",
    "ScopeUsage",
    "SnsPublisher",
    "UsageView",
    "WebhookPublisher",
    "cost_usd",
    "publisher_from_settings",
]
