"""Redis key names and UTC periods for budgets and rate limits.

Every key of a brand lives under the hash tag ``{<brand>}``, so one Lua script may touch a
user's, a conversation's and the brand's keys atomically, and on Redis Cluster they all
sit in one slot. Free-form parts (brand, user id, conversation id, request id) are
percent-encoded (``urllib.parse.quote`` with no safe characters beyond ``A-Za-z0-9_.-~``),
so none can contain ``{``, ``}`` or ``:``; a user named ``a}:b`` becomes ``a%7D%3Ab`` and
can neither move the hash tag nor impersonate another key. The encoding is injective
(``%`` itself is encoded), so two different ids never share a key.

Layout (``<b>`` brand, ``<u>`` user, ``<c>`` conversation, ``<r>`` request id)::

    cg:{<b>}:u:<u>:d:YYYYMMDD   HASH used, reserved        user's UTC day
    cg:{<b>}:u:<u>:m:YYYYMM     HASH used, reserved        user's UTC month
    cg:{<b>}:b:m:YYYYMM         HASH used, reserved,       brand's UTC month
                                     cost_micros, alerted
    cg:{<b>}:c:<c>              HASH used, reserved        conversation total
    cg:{<b>}:leases             ZSET lease key -> lease expiry (epoch ms): outstanding
    cg:{<b>}:lease:<r>          STRING a reservation's record (``lua/leases.lua``)
    cg:{<b>}:rl:u:<u>           STRING GCRA theoretical arrival time (epoch us), per user
    cg:{<b>}:rl:b               STRING GCRA theoretical arrival time (epoch us), per brand

Period keys expire at the end of their period plus :data:`PERIOD_MARGIN_S` (so last
period's figures stay readable for a while and a late settle still lands);
conversation keys expire ``conversation_ttl_s`` after the last reservation that found
nothing else in flight on them (in practice, after the conversation's last turn). TTLs are
computed from the injected clock and set relative (EXPIRE), so a test or skewed clock
never has the server drop a live period's key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

PERIOD_MARGIN_S = 7 * 24 * 3600
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")  # what quote(safe="") leaves as it is

Clock = Callable[[], float]
"""Epoch seconds now; ``time.time`` in production, a hand-moved clock in tests."""


def encode_part(text: str) -> str:
    """Percent-encode a free-form id so it stays inside its key segment. An id of
    unreserved characters alone (letters, digits, ``_.-~``: request and conversation ids,
    most user ids) is its own encoding: returned as it is, without passing through, or
    filling, the cache of the others."""
    if text.isascii() and (text.isalnum() or _UNRESERVED.fullmatch(text)):
        return text
    return _quoted(text)


@lru_cache(maxsize=65536)
def _quoted(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and month an instant falls in, and when their keys may expire."""

    day: str
    month: str
    day_expire_at: int
    month_expire_at: int

    @staticmethod
    def at(epoch_s: float) -> Periods:
        return _periods_of_day(int(epoch_s // 86400))


@lru_cache(maxsize=64)
def _periods_of_day(day_number: int) -> Periods:
    """Periods of the UTC day ``day_number`` days after the epoch (UTC days have no leap
    seconds in POSIX time, so the division above is exact)."""
    day_start = datetime.fromtimestamp(day_number * 86400, tz=UTC)
    next_day = day_start + timedelta(days=1)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return Periods(
        day=day_start.strftime("%Y%m%d"),
        month=day_start.strftime("%Y%m"),
        day_expire_at=int(next_day.timestamp()) + PERIOD_MARGIN_S,
        month_expire_at=int(next_month.timestamp()) + PERIOD_MARGIN_S,
    )


@dataclass(frozen=True, slots=True)
class BrandKeys:
    """Key names of one brand; every name carries the brand's hash tag."""

    prefix: str

    @staticmethod
    def of(brand: str) -> BrandKeys:
        return _brand_keys(brand)

    def user_day(self, user_id: str, day: str) -> str:
        return f"{self.prefix}u:{encode_part(user_id)}:d:{day}"

    def user_month(self, user_id: str, month: str) -> str:
        return f"{self.prefix}u:{encode_part(user_id)}:m:{month}"

    def brand_month(self, month: str) -> str:
        return f"{self.prefix}b:m:{month}"

    @staticmethod
    def month_of(brand_month_key: str) -> str:
        """The ``YYYYMM`` a brand-month key (``…:b:m:YYYYMM``) belongs to."""
        return brand_month_key.rsplit(":", 1)[-1]

    def conversation(self, conversation_id: str) -> str:
        return f"{self.prefix}c:{encode_part(conversation_id)}"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    def lease(self, request_id: str) -> str:
        return f"{self.prefix}lease:{encode_part(request_id)}"

    def user_rate(self, user_id: str) -> str:
        return f"{self.prefix}rl:u:{encode_part(user_id)}"

    @property
    def brand_rate(self) -> str:
        return f"{self.prefix}rl:b"


@lru_cache(maxsize=1024)
def _brand_keys(brand: str) -> BrandKeys:
    return BrandKeys(prefix=f"cg:{{{encode_part(brand)}}}:")
