"""Retries before the first token: a pure delay policy and one async retry loop.

``compute_backoff`` is exponential backoff with full jitter (a uniform draw between 0 and
``min(cap, base * 2**(failures-1))``); ``retry_delay`` adds the provider's own
``retry-after`` and says when to stop; ``call_with_retry`` is the only loop.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.config import ProviderOptions
from providers.errors import (
    CircuitOpen,
    ProviderRateLimited,
    ProviderTimeout,
    RetryableProviderError,
)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_s: float = 0.25
    cap_s: float = 4.0
    max_retry_after_s: float = 10.0

    @classmethod
    def from_options(cls, options: ProviderOptions) -> RetryPolicy:
        return cls(max_retries=options.max_retries, base_s=options.backoff_base_s,
                   cap_s=options.backoff_cap_s, max_retry_after_s=options.max_retry_after_s)


def compute_backoff(failures: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1): full jitter."""
    ceiling = min(cap, base * 2 ** max(0, min(failures - 1, 62)))
    return rng.uniform(0.0, ceiling)


def retry_delay(error: RetryableProviderError, failures: int, policy: RetryPolicy,
                rng: random.Random) -> float | None:
    """How long to wait before the next attempt, or None to stop retrying this provider.

    A skipped provider (open circuit) is not retried, nor one that timed out: it has had
    its time, the next provider gets the rest. A ``retry-after`` is honoured (the delay is
    at least that long) unless it exceeds ``max_retry_after_s``.
    """
    if failures > policy.max_retries or isinstance(error, CircuitOpen | ProviderTimeout):
        return None
    delay = compute_backoff(failures, base=policy.base_s, cap=policy.cap_s, rng=rng)
    if isinstance(error, ProviderRateLimited) and error.retry_after_s is not None:
        if error.retry_after_s > policy.max_retry_after_s:
            return None
        delay = max(delay, error.retry_after_s)
    return delay


def _always() -> bool:
    return True


async def call_with_retry(operation: Callable[[], Awaitable[T]], *, policy: RetryPolicy,
                          sleep: Sleep, rng: random.Random,
                          may_retry: Callable[[], bool] = _always) -> T:
    """Run ``operation`` until it succeeds, raises a non-retryable error, or retries end.

    ``may_retry`` is asked after each failure (the router: is the circuit still closed?);
    when it says no, the failure is raised as it is.
    """
    failures = 0
    while True:
        try:
            return await operation()
        except RetryableProviderError as exc:
            failures += 1
            delay = retry_delay(exc, failures, policy, rng)
            if delay is None or not may_retry():
                raise
            await sleep(delay)
