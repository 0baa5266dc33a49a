"""The circuit breaker's states on a hand-moved clock."""

from __future__ import annotations

from providers.circuit import CircuitBreaker, CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(threshold=threshold, cooldown_s=10.0, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.try_acquire()
    b.record_failure()
    assert b.state == "open"
    assert not b.try_acquire()


def test_half_open_after_cooldown_lets_one_probe_through() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.record_failure()
    clock.now += 9.9
    assert not b.try_acquire()
    clock.now += 0.1
    assert b.state == "half_open"
    assert b.try_acquire()
    assert not b.try_acquire()  # one probe at a time
    b.record_success()
    assert b.state == "closed" and b.try_acquire()


def test_failed_probe_opens_again_for_a_full_cooldown() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.record_failure()
    clock.now += 10
    assert b.try_acquire()
    b.record_failure()
    assert b.state == "open"
    clock.now += 9
    assert not b.try_acquire()
    clock.now += 1
    assert b.try_acquire()


def test_released_probe_can_be_taken_again() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.record_failure()
    clock.now += 10
    assert b.try_acquire()
    b.release()
    assert b.try_acquire()


def test_threshold_zero_never_opens() -> None:
    b = breaker(Clock(), threshold=0)
    for _ in range(100):
        b.record_failure()
    assert b.state == "closed"


def test_breakers_are_per_key() -> None:
    clock = Clock()
    breakers = CircuitBreakers(clock)
    one = breakers.get("openai:a", threshold=1, cooldown_s=5)
    assert breakers.get("openai:a", threshold=9, cooldown_s=9) is one
    one.record_failure()
    assert breakers.state("openai:a") == "open"
    assert breakers.state("openai:b") == "closed"
