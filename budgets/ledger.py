"""The token budget ledger: reserve before a turn, settle after it, read usage.

A turn reserves ``prompt tokens + max_tokens`` on four scopes at once (user day, user
month, brand month, conversation total), all or nothing, in one Lua script; the first
scope that would overflow refuses it. Committed usage of a scope is ``used + reserved``,
and a scope admits a reservation only if ``committed + tokens <= limit``, so under any
concurrency committed usage never exceeds a limit. After the turn, :meth:`settle`
replaces the reservation with the actual tokens (provider-reported, else counted), once
per request id; actual usage above the reservation is recorded in full, so ``used`` may
then exceed a limit by that overrun and later reservations on that scope are refused.

A reservation not settled within its lease is given back by the scripts themselves:
every reserve and read first releases the brand's expired leases. A settle that
arrives after its lease ran out still records the actual usage, exactly once, as long as
it comes within ``late_settle_s``. Usage is billed in the periods the reservation was
made in: reserved on Nov 30 23:59 UTC and settled on Dec 1, it counts for November.

Time comes from the injected clock and is passed into the scripts, so tests can move it.
Key layout: :mod:`budgets.keys`; script contracts: ``budgets/lua/*.lua``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from budgets.alerts import AlertSink, BudgetAlert
from budgets.keys import BrandKeys, Clock, Periods
from budgets.pricing import micros_to_usd, usd_to_micros
from budgets.scripts import LedgerScripts
from gateway.config import UNLIMITED, Brand, Plan
from memory.pipelining import AutoPipeline, then
from memory.redis_client import RedisClient

Scope = Literal["user_day", "user_month", "brand_month", "conversation"]
SCOPES: tuple[Scope, ...] = ("user_day", "user_month", "brand_month", "conversation")
UNLIMITED_REMAINING = 2**53 - 1
"""What :meth:`BudgetLedger.conversation_remaining` answers for an unlimited conversation."""
MAX_RELEASE_PER_CALL = 256
"""Expired leases one script call gives back at most (the rest go on the next calls)."""


class RequestIdReused(ValueError):
    """A reservation was asked under a request id that was already settled or released."""


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Token limits of the four scopes (``-1`` unlimited) and the brand's alert level.

    ``alert_threshold`` is the fraction of ``brand_month`` whose crossing alerts the
    brand once per month; 0 (or an unlimited brand month) means no alert.
    """

    user_day: int
    user_month: int
    brand_month: int
    conversation: int
    alert_threshold: float = 0.0

    def __post_init__(self) -> None:
        for scope in SCOPES:
            if getattr(self, scope) < UNLIMITED:
                raise ValueError(f"{scope}: a limit is >= 0, or -1 for unlimited")
        if not 0.0 <= self.alert_threshold <= 1.0:
            raise ValueError("alert_threshold must be between 0 and 1")

    @classmethod
    def for_plan(cls, plan: Plan, brand: Brand) -> BudgetLimits:
        return cls(user_day=plan.tokens_per_day, user_month=plan.tokens_per_month,
                   brand_month=brand.monthly_budget,
                   conversation=brand.tokens_per_conversation,
                   alert_threshold=brand.alert_threshold)

    @property
    def alert_tokens(self) -> int:
        """Brand-month tokens at which the alert fires; 0 when there is none."""
        if self.brand_month == UNLIMITED or self.alert_threshold <= 0.0:
            return 0
        return max(1, math.ceil(self.alert_threshold * self.brand_month))


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    brand: str
    user_id: str
    conversation_id: str
    request_id: str
    tokens: int
    limits: BudgetLimits
    least_tokens: int = 0
    """When > 0, a limited conversation may cut the reservation down to what it has left,
    but not below this (the prompt plus one answer token); 0: ``tokens`` or a refusal."""

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, int) or not isinstance(self.least_tokens, int):
            raise TypeError("tokens and least_tokens are whole numbers (int)")
        if self.tokens < 0:
            raise ValueError("tokens must be >= 0")
        if not 0 <= self.least_tokens <= self.tokens:
            raise ValueError("least_tokens must be between 0 and tokens")


@dataclass(frozen=True, slots=True)
class Reserved:
    request_id: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The first scope that would overflow, its limit, and its committed usage then."""

    scope: Scope
    limit: int
    committed: int


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    used: int
    reserved: int

    @property
    def committed(self) -> int:
        return self.used + self.reserved


@dataclass(frozen=True, slots=True)
class BrandMonthUsage:
    month: str
    used: int
    reserved: int
    cost_usd: float
    alerted: bool

    @property
    def committed(self) -> int:
        return self.used + self.reserved


@dataclass(frozen=True, slots=True)
class UsageView:
    """A user's current UTC day and month, and their brand's month."""

    day: str
    month: str
    user_day: ScopeUsage
    user_month: ScopeUsage
    brand_month: BrandMonthUsage


class BudgetLedger:
    """Reservations, settlements and usage reads over the Lua scripts."""

    def __init__(self, redis: RedisClient, *, clock: Clock = time.time, lease_s: float = 120,
                 alerts: AlertSink | None = None, settled_ttl_s: int = 900,
                 late_settle_s: int = 24 * 3600,
                 conversation_ttl_s: int = 90 * 24 * 3600,
                 pipeline: AutoPipeline | None = None) -> None:
        """``settled_ttl_s``: how long a settled request id is remembered (a repeated
        settle or reserve under it changes nothing); ``late_settle_s``: how long after its
        lease ran out a reservation can still be settled; ``conversation_ttl_s``: how long
        a conversation's total is kept after its last turn; ``pipeline``: the process's
        shared auto-pipeline (one of its own otherwise)."""
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self._clock = clock
        self._lease_ms = int(lease_s * 1000)
        self._alerts = alerts
        self._settled_ttl_s = settled_ttl_s
        self._late_settle_s = late_settle_s
        self._conversation_ttl_s = conversation_ttl_s
        self._runner = pipeline or AutoPipeline(redis)
        self._scripts = LedgerScripts.register(self._runner)

    def _now_ms(self) -> tuple[float, int]:
        now = self._clock()
        return now, int(now * 1000)

    def _numbers(self, now_ms: int, *more: int) -> list[int]:
        """The scripts' arguments: A[1..3] of ``leases.lua``, then ``more``."""
        return [now_ms, MAX_RELEASE_PER_CALL, self._late_settle_s, *more]

    def reserve(self, req: ReservationRequest) -> asyncio.Future[Reserved | Refused]:
        """Reserve ``req.tokens`` on all four scopes, or refuse on the first that overflows
        (a future: the script is queued at once).

        Asking again under a request id that holds a reservation answers that reservation
        (a retried call reserves once); under a settled or released one it raises
        :class:`RequestIdReused`.
        """
        now, now_ms = self._now_ms()
        periods, keys, lim = Periods.at(now), BrandKeys.of(req.brand), req.limits
        return self._runner.run(
            self._scripts.reserve,
            [keys.user_day(req.user_id, periods.day), keys.user_month(req.user_id, periods.month),
             keys.brand_month(periods.month), keys.conversation(req.conversation_id),
             keys.leases, keys.lease(req.request_id)],
            self._numbers(now_ms, req.tokens,
                          lim.user_day, lim.user_month, lim.brand_month, lim.conversation,
                          now_ms + self._lease_ms, periods.day_expire_at,
                          periods.month_expire_at, self._conversation_ttl_s, lim.alert_tokens,
                          req.least_tokens),
            convert=functools.partial(_reservation, req.request_id))

    def settle(self, *, brand: str, request_id: str, actual_tokens: int,
               cost_usd: float = 0.0) -> asyncio.Future[bool]:
        """Replace the reservation with ``actual_tokens`` and add ``cost_usd`` to the brand.

        True if this call settled it; False if there was nothing to settle (settled
        already, unknown, or its record is gone). Reports a crossing of the brand's alert
        level to the alert sink, once per brand and month, before it is done. A future:
        the script is queued at once.
        """
        if actual_tokens < 0 or cost_usd < 0:
            raise ValueError("actual_tokens and cost_usd must be >= 0")
        _, now_ms = self._now_ms()
        keys = BrandKeys.of(brand)
        reply = self._runner.run(
            self._scripts.settle, [keys.lease(request_id), keys.leases],
            self._numbers(now_ms, actual_tokens, usd_to_micros(cost_usd), self._settled_ttl_s))
        return then(reply, functools.partial(self._settled, brand))

    def _settled(self, brand: str, reply: int | bytes | str) -> bool | Awaitable[bool]:
        """What ``settle.lua`` answered; a crossing (rare) is reported first."""
        if isinstance(reply, int):
            return reply == 1
        if self._alerts is None:
            return True
        return _report(self._alerts, _alert_from_reply(brand, _text(reply)))

    async def conversation_remaining(self, brand: str, conversation_id: str, limit: int) -> int:
        """Tokens the conversation has left: ``limit - used - reserved``, at least 0;
        :data:`UNLIMITED_REMAINING` when ``limit`` is -1."""
        if limit == UNLIMITED:
            return UNLIMITED_REMAINING
        keys = BrandKeys.of(brand)
        (row,) = await self._read(keys, [keys.conversation(conversation_id)])
        return max(0, limit - int(row[0]) - int(row[1]))

    async def usage(self, brand: str, user_id: str) -> UsageView:
        """The user's current day and month, and the brand's month (used and reserved)."""
        now = self._clock()
        periods, keys = Periods.at(now), BrandKeys.of(brand)
        day, month, brand_row = await self._read(keys, [
            keys.user_day(user_id, periods.day), keys.user_month(user_id, periods.month),
            keys.brand_month(periods.month)])
        return UsageView(day=periods.day, month=periods.month,
                         user_day=ScopeUsage(used=int(day[0]), reserved=int(day[1])),
                         user_month=ScopeUsage(used=int(month[0]), reserved=int(month[1])),
                         brand_month=_brand_month(periods.month, brand_row))

    async def brand_usage(self, brand: str, month: str | None = None) -> BrandMonthUsage:
        """The brand's tokens and cost in ``month`` (YYYYMM; default: the current one)."""
        month = month or Periods.at(self._clock()).month
        keys = BrandKeys.of(brand)
        (row,) = await self._read(keys, [keys.brand_month(month)])
        return _brand_month(month, row)

    async def _read(self, keys: BrandKeys, scope_keys: list[str]) -> list[list[int]]:
        _, now_ms = self._now_ms()
        rows: list[list[int]] = await self._runner.run(
            self._scripts.read, [keys.leases, *scope_keys], self._numbers(now_ms))
        return rows


def _brand_month(month: str, row: list[int]) -> BrandMonthUsage:
    return BrandMonthUsage(month=month, used=int(row[0]), reserved=int(row[1]),
                           cost_usd=micros_to_usd(int(row[2])), alerted=bool(int(row[3])))


async def _report(alerts: AlertSink, alert: BudgetAlert) -> bool:
    await alerts.budget_alert(alert)
    return True


def _reservation(request_id: str, reply: int | bytes | str) -> Reserved | Refused:
    """What ``reserve.lua`` answered (see its header)."""
    if isinstance(reply, int):
        if reply < 0:
            raise RequestIdReused(f"request id {request_id!r} was already settled or released")
        return Reserved(request_id=request_id, tokens=reply)
    scope, limit, committed = _text(reply).split()
    return Refused(scope=SCOPES[int(scope) - 1], limit=int(limit), committed=int(committed))


def _text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def _alert_from_reply(brand: str, reply: str) -> BudgetAlert:
    used, alert_at, limit, cost, month_key = reply.split(" ", 4)
    return BudgetAlert(brand=brand, month=BrandKeys.month_of(month_key), used_tokens=int(used),
                       alert_tokens=int(alert_at), budget_tokens=int(limit),
                       cost_usd=micros_to_usd(int(cost)))
