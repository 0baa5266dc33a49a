"""Circuit breakers, one per provider kind and model, on an injectable clock.

    closed ──N consecutive failures──► open ──cool-down elapsed──► half-open
       ▲                                ▲                              │ one probe
       └──────────── probe succeeds ────┼──────────────────────────────┤
                                        └──────── probe fails ─────────┘

While open, the router skips the provider without sending it a request. Half-open lets
exactly one request through as a probe; the others keep skipping until it has a verdict.
A request that ends without a verdict (cancelled, or a fatal error that says nothing about
the provider's health) hands the probe slot back with ``release()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


@dataclass
class CircuitBreaker:
    threshold: int  # 0: never opens
    cooldown_s: float
    clock: Clock
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def try_acquire(self) -> bool:
        """May a request go to the provider now? Half-open: only the first, as a probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def record_success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def record_failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or (self.threshold and self.failures >= self.threshold):
            self.opened_at = self.clock()

    def release(self) -> None:
        self.probing = False


@dataclass
class CircuitBreakers:
    """The breakers of one router, created on first use per ``kind:model``."""

    clock: Clock
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def get(self, key: str, *, threshold: int, cooldown_s: float) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(threshold=threshold, cooldown_s=cooldown_s, clock=self.clock)
            self._breakers[key] = breaker
        return breaker

    def state(self, key: str) -> CircuitState:
        breaker = self._breakers.get(key)
        return breaker.state if breaker is not None else "closed"
