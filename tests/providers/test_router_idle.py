"""The between-chunk timeout of a committed stream: the router's per-stream idle watchdog.

The router tests drive an in-memory provider whose pacing the test scripts, so that a
stall, a fast provider under a slow consumer and an outside cancel are exact; the
:class:`IdleWatch` tests pin its timer and cancellation bookkeeping. Timeouts are tiny and
outcomes are asserted, never exact timings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

import providers.router as router_module
from gateway.config import ProviderOptions, ProviderSpec
from providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from providers.errors import ProviderError, ProviderTimeout, StreamInterrupted
from providers.idle_watch import IdleWatch
from providers.registry import ProviderRegistry
from providers.router import RoutedEvent, Router
from tests.fakes.providers import chat_request

TIMEOUT_S = 0.05
REQUEST = chat_request(("user", "Hi"), model="ignored")
SPEC = ProviderSpec("scripted", "m")

Script = Callable[[], AsyncGenerator[ProviderEvent, None]]


@dataclass
class ScriptedProvider:
    """Streams whatever the current ``script`` yields; notes when a stream closes."""

    script: Script
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    closed: int = 0

    @property
    def name(self) -> str:
        return "scripted"

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        try:
            async for event in self.script():
                yield event
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        pass

    async def hang(self) -> None:
        """For scripts: block for good, saying so first."""
        self.waiting.set()
        await asyncio.Event().wait()


def make_router(provider: ScriptedProvider, **overrides: Any) -> Router:
    settings: dict[str, Any] = {"first_token_timeout_s": 5.0, "chunk_timeout_s": TIMEOUT_S,
                                "max_retries": 0, "circuit_failure_threshold": 1}
    options = ProviderOptions(**(settings | overrides))
    return Router(ProviderRegistry({"scripted": provider}, options={"scripted": options}))


@pytest.fixture
def watches(monkeypatch: pytest.MonkeyPatch) -> list[IdleWatch]:
    """Every IdleWatch the router makes, to check its timer is gone afterwards."""
    made: list[IdleWatch] = []

    def recording(timeout_s: float) -> IdleWatch:
        made.append(IdleWatch(timeout_s))
        return made[-1]

    monkeypatch.setattr(router_module, "IdleWatch", recording)
    return made


async def collect(events: AsyncGenerator[RoutedEvent, None],
                  between: Callable[[], Awaitable[None]] | None = None
                  ) -> tuple[list[RoutedEvent], ProviderError | None]:
    got: list[RoutedEvent] = []
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                got.append(event)
                if between is not None:
                    await between()
    except ProviderError as exc:
        return got, exc
    return got, None


def text(events: list[RoutedEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def assert_torn_down(watch: IdleWatch) -> None:
    assert watch.handle is None


async def test_a_stalled_committed_stream_times_out(watches: list[IdleWatch]) -> None:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        yield TextDelta("a")
        yield TextDelta("b")
        await provider.hang()
        yield TextDelta("never")

    provider = ScriptedProvider(script)
    router = make_router(provider)
    with capture_logs() as logs:
        events, error = await collect(router.stream("acme", (SPEC,), REQUEST))
    assert isinstance(error, StreamInterrupted)
    assert isinstance(error.cause, ProviderTimeout)
    assert str(error.cause) == f"scripted sent nothing for {TIMEOUT_S}s"
    assert text(events) == "ab"
    assert provider.closed == 1
    assert router.circuit_state(SPEC) == "open"  # the failure reached the breaker
    assert [(e["event"], e.get("error")) for e in logs if e["event"] == "provider_failed"] == [
        ("provider_failed", "ProviderTimeout")]
    assert_torn_down(*watches)
    consumer = asyncio.current_task()
    assert consumer is not None and consumer.cancelling() == 0  # the watchdog's was withdrawn


async def test_a_slow_consumer_does_not_time_out_a_fast_provider(watches: list[IdleWatch]
                                                                 ) -> None:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        for i in range(4):
            yield TextDelta(f"w{i} ")
        yield Finish("stop")

    provider = ScriptedProvider(script)
    router = make_router(provider)

    async def slow_client() -> None:  # e.g. writing to a slow socket
        await asyncio.sleep(3 * TIMEOUT_S)

    events, error = await collect(router.stream("acme", (SPEC,), REQUEST), between=slow_client)
    assert error is None
    assert text(events) == "w0 w1 w2 w3 "
    assert events[-1] == Finish("stop")
    assert router.circuit_state(SPEC) == "closed"
    assert_torn_down(*watches)


async def test_steady_events_within_the_timeout_pass() -> None:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        for i in range(12):
            await asyncio.sleep(TIMEOUT_S / 5)
            yield TextDelta(str(i % 10))

    router = make_router(ScriptedProvider(script), chunk_timeout_s=0.25)
    events, error = await collect(router.stream("acme", (SPEC,), REQUEST))
    assert error is None
    assert text(events) == "012345678901"


async def test_an_outside_cancel_during_a_wait_propagates(watches: list[IdleWatch]) -> None:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        yield TextDelta("a")
        await provider.hang()
        yield TextDelta("never")

    provider = ScriptedProvider(script)
    router = make_router(provider, chunk_timeout_s=10.0)
    task = asyncio.create_task(collect(router.stream("acme", (SPEC,), REQUEST)))
    await asyncio.wait_for(provider.waiting.wait(), timeout=5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.closed == 1
    assert router.circuit_state(SPEC) == "closed"  # a cancel says nothing about health
    assert_torn_down(*watches)


async def test_closing_the_stream_between_events_tears_the_watch_down(
        watches: list[IdleWatch]) -> None:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        while True:
            yield TextDelta("x")

    provider = ScriptedProvider(script)
    router = make_router(provider, chunk_timeout_s=10.0)
    stream = router.stream("acme", (SPEC,), REQUEST)
    deltas = 0
    async for event in stream:
        deltas += isinstance(event, TextDelta)
        if deltas == 3:
            break
    (watch,) = watches
    armed = watch.handle
    assert armed is not None
    await stream.aclose()
    assert_torn_down(watch)
    assert armed.cancelled()
    assert provider.closed == 1


# --- IdleWatch ------------------------------------------------------------------------


@pytest.fixture
async def watch() -> AsyncIterator[IdleWatch]:
    idle = IdleWatch(TIMEOUT_S)
    yield idle
    idle.close()


async def test_a_wait_longer_than_the_timeout_raises_timeout_error(watch: IdleWatch) -> None:
    with pytest.raises(TimeoutError), watch:
        await asyncio.sleep(10)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # its cancel was withdrawn


async def test_time_outside_the_waits_does_not_count(watch: IdleWatch) -> None:
    for _ in range(3):
        with watch:
            await asyncio.sleep(0)
        await asyncio.sleep(3 * TIMEOUT_S)
    with pytest.raises(TimeoutError), watch:
        await asyncio.sleep(10)


async def test_one_timer_serves_many_events(watch: IdleWatch) -> None:
    with watch:
        await asyncio.sleep(0)
    armed = watch.handle
    assert armed is not None
    for _ in range(200):
        with watch:
            await asyncio.sleep(0)
        assert watch.handle is armed  # nothing scheduled per event


async def test_the_timer_is_rearmed_only_when_it_fires_after_progress() -> None:
    watch = IdleWatch(0.25)
    handles: list[asyncio.TimerHandle | None] = [None]
    try:
        for _ in range(30):  # about 0.3 s of steady progress
            with watch:
                await asyncio.sleep(0.01)
            if watch.handle is not handles[-1]:
                handles.append(watch.handle)
    finally:
        watch.close()
    assert 1 <= len(handles) - 1 < 10  # a handful of firings, not one timer per event


async def test_an_outside_cancel_with_the_watchdogs_is_not_swallowed(watch: IdleWatch) -> None:
    entered = asyncio.Event()

    async def wait() -> None:
        with watch:
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(wait())
    await entered.wait()
    assert watch.handle is not None
    # Due together with the watchdog's timer: both cancels reach the task at once.
    asyncio.get_running_loop().call_at(watch.handle.when(), task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_close_cancels_the_timer(watch: IdleWatch) -> None:
    with watch:
        await asyncio.sleep(0)
    armed = watch.handle
    assert armed is not None
    watch.close()
    assert watch.handle is None and armed.cancelled()
    watch.close()  # idempotent


async def test_an_unclosed_watch_drops_its_timer_when_it_fires_between_waits() -> None:
    watch = IdleWatch(TIMEOUT_S)
    with watch:
        await asyncio.sleep(0)
    assert watch.handle is not None
    await asyncio.sleep(3 * TIMEOUT_S)
    assert watch.handle is None
