"""Key names stay in their tenant's hash slot whatever the ids contain; UTC periods."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from redis.crc import key_slot

from budgets.keys import PERIOD_MARGIN_S, BrandKeys, Periods, encode_part

HOSTILE_IDS = ["plain", "a}b", "{other}", "x:d:20261128", "%7D", "é 🙂", "", "a" * 300]


def all_keys(keys: BrandKeys, some_id: str) -> list[str]:
    return [keys.user_day(some_id, "20261128"), keys.user_month(some_id, "202611"),
            keys.brand_month("202611"), keys.conversation(some_id), keys.leases,
            keys.lease(some_id), keys.user_rate(some_id), keys.brand_rate]


def test_key_layout() -> None:
    keys = BrandKeys.of("growain")
    assert keys.user_day("u1", "20261128") == "cg:{growain}:u:u1:d:20261128"
    assert keys.user_month("u1", "202611") == "cg:{growain}:u:u1:m:202611"
    assert keys.brand_month("202611") == "cg:{growain}:b:m:202611"
    assert keys.conversation("c-9") == "cg:{growain}:c:c-9"
    assert keys.lease("r1") == "cg:{growain}:lease:r1"
    assert keys.leases == "cg:{growain}:leases"
    assert BrandKeys.month_of(keys.brand_month("202611")) == "202611"


@pytest.mark.parametrize("some_id", HOSTILE_IDS)
def test_every_key_of_a_brand_shares_its_slot(some_id: str) -> None:
    keys = BrandKeys.of("growain")
    slots = {key_slot(k.encode()) for k in all_keys(keys, some_id)}
    assert slots == {key_slot(b"{growain}")}


@pytest.mark.parametrize("some_id", HOSTILE_IDS)
def test_ids_cannot_leave_their_segment(some_id: str) -> None:
    encoded = encode_part(some_id)
    assert not {"{", "}", ":"} & set(encoded)


def test_encoding_is_injective_on_lookalikes() -> None:
    lookalikes = ["a}b", "a%7Db", "a%257Db", "a:b", "a%3Ab"]
    assert len({encode_part(x) for x in lookalikes}) == len(lookalikes)


def test_brand_names_are_encoded_too() -> None:
    assert BrandKeys.of("evil}:x").prefix == "cg:{evil%7D%3Ax}:"


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("moment", "day", "month", "day_end", "month_end"), [
    (ts(2026, 11, 30, 23, 59, 59), "20261130", "202611", ts(2026, 12, 1), ts(2026, 12, 1)),
    (ts(2026, 12, 1, 0, 0, 0), "20261201", "202612", ts(2026, 12, 2), ts(2027, 1, 1)),
    (ts(2028, 2, 29, 10), "20280229", "202802", ts(2028, 3, 1), ts(2028, 3, 1)),
    (ts(2026, 12, 31, 23, 0), "20261231", "202612", ts(2027, 1, 1), ts(2027, 1, 1)),
])
def test_periods_are_utc(moment: float, day: str, month: str, day_end: float,
                         month_end: float) -> None:
    periods = Periods.at(moment)
    assert (periods.day, periods.month) == (day, month)
    assert periods.day_expire_at == day_end + PERIOD_MARGIN_S
    assert periods.month_expire_at == month_end + PERIOD_MARGIN_S


@pytest.mark.parametrize("some_id", [*HOSTILE_IDS, "abc123", "0f" * 16, "User42", "é", "١٢",
                                     "ｆｕｌｌ", "a_b", "a-b.c~d", "a-b\n", "", "ß"])
def test_encoding_is_quote_with_nothing_safe(some_id: str) -> None:
    """Unreserved characters returned as they are (the fast path) are exactly what
    percent-encoding makes of them; non-ASCII letters and digits still get encoded."""
    assert encode_part(some_id) == quote(some_id, safe="")
