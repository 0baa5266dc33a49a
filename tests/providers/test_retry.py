"""Backoff and the retry loop, without sockets or real sleeping."""

from __future__ import annotations

import random

import pytest

from providers.errors import (
    CircuitOpen,
    ProviderBadRequest,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
)
from providers.retry import RetryPolicy, call_with_retry, compute_backoff, retry_delay

POLICY = RetryPolicy(max_retries=2, base_s=0.1, cap_s=1.0, max_retry_after_s=5.0)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.mark.parametrize(("failures", "ceiling"), [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0),
                                                   (500, 1.0)])
def test_full_jitter_stays_under_the_exponential_ceiling(failures: int, ceiling: float) -> None:
    rng = random.Random(7)
    draws = [compute_backoff(failures, base=0.1, cap=1.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert max(draws) > ceiling * 0.8  # jitter spreads over the whole range


def test_backoff_is_deterministic_for_a_seeded_rng() -> None:
    first = [compute_backoff(n, base=0.1, cap=1.0, rng=random.Random(3)) for n in range(1, 5)]
    again = [compute_backoff(n, base=0.1, cap=1.0, rng=random.Random(3)) for n in range(1, 5)]
    assert first == again


def test_retry_after_is_a_floor_and_too_long_means_give_up() -> None:
    rng = random.Random(1)
    waited = retry_delay(ProviderRateLimited("x", retry_after_s=0.8), 1, POLICY, rng)
    assert waited is not None and waited >= 0.8
    assert retry_delay(ProviderRateLimited("x", retry_after_s=60), 1, POLICY, rng) is None


def test_no_retry_past_max_or_for_a_skipped_provider() -> None:
    rng = random.Random(1)
    assert retry_delay(ProviderOverloaded("x"), 2, POLICY, rng) is not None
    assert retry_delay(ProviderOverloaded("x"), 3, POLICY, rng) is None
    assert retry_delay(CircuitOpen("x"), 1, POLICY, rng) is None
    assert retry_delay(ProviderTimeout("x"), 1, POLICY, rng) is None


async def test_retries_then_succeeds() -> None:
    outcomes: list[Exception | str] = [ProviderOverloaded("a"), ProviderRateLimited("b"), "ok"]
    sleeps = Sleeps()

    async def operation() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await call_with_retry(operation, policy=POLICY, sleep=sleeps,
                                 rng=random.Random(2)) == "ok"
    assert len(sleeps.delays) == 2
    assert sleeps.delays[0] <= 0.1 and sleeps.delays[1] <= 0.2


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    calls = 0

    async def operation() -> str:
        nonlocal calls
        calls += 1
        raise ProviderOverloaded(f"attempt {calls}")

    with pytest.raises(ProviderOverloaded, match="attempt 3"):
        await call_with_retry(operation, policy=POLICY, sleep=Sleeps(), rng=random.Random(0))
    assert calls == 3


async def test_fatal_errors_are_not_retried() -> None:
    sleeps = Sleeps()

    async def operation() -> str:
        raise ProviderBadRequest("no")

    with pytest.raises(ProviderBadRequest):
        await call_with_retry(operation, policy=POLICY, sleep=sleeps, rng=random.Random(0))
    assert sleeps.delays == []


async def test_may_retry_stops_the_loop_with_the_failure() -> None:
    calls = 0

    async def operation() -> str:
        nonlocal calls
        calls += 1
        raise ProviderOverloaded(f"attempt {calls}")

    with pytest.raises(ProviderOverloaded, match="attempt 2"):
        await call_with_retry(operation, policy=POLICY, sleep=Sleeps(), rng=random.Random(0),
                              may_retry=lambda: calls < 2)
