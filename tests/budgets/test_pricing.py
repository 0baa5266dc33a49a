from __future__ import annotations

import pytest

from budgets.pricing import cost_usd, micros_to_usd, usd_to_micros
from gateway.config import Price

MINI = Price(input=0.15, output=0.60)


def test_cost_is_per_million_tokens() -> None:
    assert cost_usd(MINI, 1_000_000, 0) == pytest.approx(0.15)
    assert cost_usd(MINI, 1000, 500) == pytest.approx(0.00045)


def test_unknown_model_costs_nothing() -> None:
    assert cost_usd(None, 1000, 1000) == 0.0


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        cost_usd(MINI, -1, 0)


def test_micros_round_trip() -> None:
    assert usd_to_micros(cost_usd(MINI, 1000, 500)) == 450
    assert micros_to_usd(450) == pytest.approx(0.00045)
