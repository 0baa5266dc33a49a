"""The router's scenario matrix: real providers (official SDKs) against the wire fakes.

Each scenario runs for three chains (primary → fallback): openai → anthropic,
anthropic → bedrock, bedrock → openai. Backoffs and timeouts are tiny; the circuit
breaker's clock is moved by hand; waits for the fake servers poll with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from gateway.config import ProviderOptions, ProviderSpec
from providers.base import Finish, ProviderEvent, TextDelta, UsageReport
from providers.errors import (
    CircuitOpen,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderTimeout,
    StreamInterrupted,
)
from providers.registry import ProviderRegistry
from providers.router import TRAILER_WAIT_S, RouteChosen, RoutedEvent, Router
from tests.fakes.providers import FAKES, chat_request, provider_for
from tests.fakes.upstream import (
    FakeUpstream,
    Reply,
    cut_after_finish,
    fail_after,
    hang_before_first_token,
    ok,
    serve,
    silent_after_finish,
    slow,
    status,
)

PAIRS = [("openai", "anthropic"), ("anthropic", "bedrock"), ("bedrock", "openai")]
REQUEST = chat_request(("system", "Be brief."), ("user", "Hi"), model="ignored")
TEST_OPTIONS = ProviderOptions(
    connect_timeout_s=1.0, first_token_timeout_s=1.0, chunk_timeout_s=1.0, max_retries=2,
    backoff_base_s=0.001, backoff_cap_s=0.01, max_retry_after_s=1.0,
    circuit_failure_threshold=3, circuit_cooldown_s=30.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds)


@dataclass
class Harness:
    router: Router
    primary: FakeUpstream
    secondary: FakeUpstream
    chain: tuple[ProviderSpec, ProviderSpec]
    clock: FakeClock
    sleeps: RecordingSleep

    def stream(self) -> Any:
        return self.router.stream("acme", self.chain, REQUEST)


@dataclass
class Turn:
    events: list[RoutedEvent]
    error: ProviderError | None

    @property
    def route(self) -> RoutedEvent:
        return self.events[0]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))


async def run_turn(harness: Harness) -> Turn:
    events: list[RoutedEvent] = []
    try:
        async with aclosing(harness.stream()) as stream:
            async for event in stream:
                events.append(event)
    except ProviderError as exc:
        return Turn(events, exc)
    return Turn(events, None)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture(params=PAIRS, ids=["->".join(p) for p in PAIRS])
async def make_harness(request: pytest.FixtureRequest) -> AsyncIterator[MakeHarness]:
    first, second = request.param
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(primary: dict[str, Any] | None = None, *,
                   trailer_wait_s: float = TRAILER_WAIT_S, **overrides: Any) -> Harness:
        """``overrides`` apply to both providers, ``primary`` to the first only."""
        options = replace(TEST_OPTIONS, **overrides)
        first_options = replace(options, **(primary or {}))
        fakes = []
        for kind in (first, second):
            context = serve(FAKES[kind]())
            fakes.append(await context.__aenter__())
            closers.append(lambda c=context: c.__aexit__(None, None, None))
        kind_options = {first: first_options, second: options}
        providers = {k: provider_for(k, f, kind_options[k]) for k, f in zip((first, second), fakes,
                                                                              strict=True)}
        registry = ProviderRegistry(providers, options=kind_options)
        closers.insert(0, registry.aclose)
        clock, sleeps = FakeClock(), RecordingSleep()
        chain = (ProviderSpec(first, f"{first}-model"), ProviderSpec(second, f"{second}-model"))
        router = Router(registry, clock=clock, sleep=sleeps, trailer_wait_s=trailer_wait_s)
        return Harness(router, fakes[0], fakes[1], chain, clock, sleeps)

    yield make
    for close in closers:
        await close()


async def eventually(condition: Callable[[], bool], within_s: float = 1.0) -> None:
    """Poll ``condition`` until it holds, failing after ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not true within {within_s}s")


async def test_plain_answer_names_the_route_and_ends_with_finish(make_harness: MakeHarness
                                                                ) -> None:
    h = await make_harness()
    turn = await run_turn(h)
    assert turn.error is None
    assert turn.route == RouteChosen(h.chain[0].kind, h.chain[0].model)
    assert turn.text == "Hello, world!"
    assert isinstance(turn.events[-1], Finish)
    usage = [e for e in turn.events if isinstance(e, UsageReport)]
    assert any(u.completion_tokens == 4 for u in usage)
    assert h.secondary.request_count == 0


async def test_rate_limited_then_success_retries_the_same_provider(make_harness: MakeHarness
                                                                  ) -> None:
    h = await make_harness()
    h.primary.script(status(429, retry_after=0.05))
    turn = await run_turn(h)
    assert turn.error is None and turn.text == "Hello, world!"
    assert turn.route == RouteChosen(h.chain[0].kind, h.chain[0].model)
    assert (h.primary.request_count, h.secondary.request_count) == (2, 0)
    assert len(h.sleeps.delays) == 1
    if h.chain[0].kind != "bedrock":  # Bedrock sends no retry-after
        assert h.sleeps.delays[0] >= 0.05


async def test_server_error_falls_back_after_retries(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.primary.default = status(500)
    turn = await run_turn(h)
    assert turn.error is None and turn.text == "Hello, world!"
    assert turn.route == RouteChosen(h.chain[1].kind, h.chain[1].model)
    assert (h.primary.request_count, h.secondary.request_count) == (3, 1)
    assert len(h.sleeps.delays) == 2


async def test_hang_before_first_token_times_out_then_falls_back(make_harness: MakeHarness
                                                                ) -> None:
    h = await make_harness(primary={"first_token_timeout_s": 0.4})
    h.primary.script(hang_before_first_token())
    started = time.monotonic()
    turn = await run_turn(h)
    assert turn.error is None
    assert turn.route == RouteChosen(h.chain[1].kind, h.chain[1].model)
    assert time.monotonic() - started < 1.5
    assert h.primary.request_count == 1  # a timeout is not retried on the same provider
    await h.primary.wait_for_disconnect(within_s=1.0)


async def test_failure_after_three_deltas_interrupts_without_fallback(make_harness: MakeHarness
                                                                     ) -> None:
    h = await make_harness()
    h.primary.script(fail_after(3))
    turn = await run_turn(h)
    assert isinstance(turn.error, StreamInterrupted)
    assert isinstance(turn.error.cause, ProviderConnectionError)
    assert turn.route == RouteChosen(h.chain[0].kind, h.chain[0].model)
    assert turn.text == "part0 part1 part2 "
    assert (h.primary.request_count, h.secondary.request_count) == (1, 0)


async def test_silence_between_chunks_interrupts(make_harness: MakeHarness) -> None:
    h = await make_harness(chunk_timeout_s=0.2)
    h.primary.script(slow("a", "b", delay_s=5.0))
    turn = await run_turn(h)
    assert isinstance(turn.error, StreamInterrupted)
    assert isinstance(turn.error.cause, ProviderTimeout)
    assert turn.text == "a"
    assert h.secondary.request_count == 0
    await h.primary.wait_for_disconnect(within_s=1.0)


@pytest.mark.parametrize("reply", [cut_after_finish("Hello", ", ", "world"),
                                   silent_after_finish("Hello", ", ", "world")],
                         ids=["cut", "silent"])
async def test_a_failure_after_the_finish_leaves_the_answer_whole(make_harness: MakeHarness,
                                                                 reply: Reply) -> None:
    """The connection cut, or silence past ``chunk_timeout_s``, once the provider has sent
    its stop reason: only the trailer (usage, the last event) is lost. The stream ends
    with the finish, as a complete answer: no error, no fallback, the breaker uncharged."""
    h = await make_harness(chunk_timeout_s=0.3, circuit_failure_threshold=1)
    h.primary.script(reply)
    turn = await run_turn(h)
    assert turn.error is None
    assert turn.route == RouteChosen(h.chain[0].kind, h.chain[0].model)
    assert turn.text == "Hello, world"
    assert turn.events[-1] == Finish("stop")
    assert h.router.circuit_state(h.chain[0]) == "closed"
    assert h.secondary.request_count == 0
    if reply.after_finish == "hang":  # the stream closed the upstream it stopped waiting for
        await h.primary.wait_for_disconnect(within_s=1.0)


async def test_silence_after_the_finish_is_waited_for_briefly(make_harness: MakeHarness
                                                             ) -> None:
    """What follows a finish comes at once: silence after it ends the answer after
    ``trailer_wait_s``, not after the (longer) ``chunk_timeout_s``."""
    h = await make_harness(chunk_timeout_s=5.0, trailer_wait_s=0.2)
    h.primary.script(silent_after_finish("Hello", ", ", "world"))
    started = time.monotonic()
    turn = await run_turn(h)
    took = time.monotonic() - started
    assert turn.error is None and turn.events[-1] == Finish("stop")
    assert 0.2 <= took < 2.0  # the trailer's wait, far from the chunk timeout
    await h.primary.wait_for_disconnect(within_s=1.0)


async def test_circuit_opens_skips_and_closes_after_cooldown(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=0, circuit_failure_threshold=2, circuit_cooldown_s=30.0)
    h.primary.default = status(503)
    for _ in range(2):
        assert (await run_turn(h)).route == RouteChosen(h.chain[1].kind, h.chain[1].model)
    assert h.router.circuit_state(h.chain[0]) == "open"
    skipped = await run_turn(h)
    assert skipped.route == RouteChosen(h.chain[1].kind, h.chain[1].model)
    assert h.primary.request_count == 2  # skipped without a request
    h.clock.now += 30.0
    assert h.router.circuit_state(h.chain[0]) == "half_open"
    h.primary.default = ok("back")
    probe = await run_turn(h)
    assert probe.route == RouteChosen(h.chain[0].kind, h.chain[0].model)
    assert probe.text == "back"
    assert h.router.circuit_state(h.chain[0]) == "closed"
    assert (h.primary.request_count, h.secondary.request_count) == (3, 3)


async def test_circuit_opening_ends_the_retries_with_the_real_error(make_harness: MakeHarness
                                                                     ) -> None:
    h = await make_harness(max_retries=5, circuit_failure_threshold=2)
    h.primary.default = status(503)
    h.secondary.default = status(503)
    turn = await run_turn(h)
    assert type(turn.error) is ProviderOverloaded  # not CircuitOpen
    assert (h.primary.request_count, h.secondary.request_count) == (2, 2)
    assert h.router.circuit_state(h.chain[0]) == "open"
    assert h.router.circuit_state(h.chain[1]) == "open"
    again = await run_turn(h)
    assert isinstance(again.error, CircuitOpen)  # nothing was tried: the skip is the error
    assert (h.primary.request_count, h.secondary.request_count) == (2, 2)


async def test_consumer_aclose_closes_the_upstream_at_once(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.primary.script(slow(*[f"w{i} " for i in range(100)], delay_s=0.05))
    stream = h.stream()
    deltas = 0
    async for event in stream:
        deltas += isinstance(event, TextDelta)
        if deltas == 2:
            break
    closed_at = time.monotonic()
    await stream.aclose()
    seen_at = await h.primary.wait_for_disconnect(within_s=1.0)
    assert seen_at - closed_at < 1.0


async def test_cancelled_consumer_task_closes_the_upstream(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.primary.script(slow(*[f"w{i} " for i in range(100)], delay_s=0.05))
    got: list[RoutedEvent] = []

    async def consume() -> None:
        async with aclosing(h.stream()) as stream:
            async for event in stream:
                got.append(event)

    task = asyncio.create_task(consume())
    await eventually(lambda: any(isinstance(e, TextDelta) for e in got))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.primary.wait_for_disconnect(within_s=1.0)


async def test_cancel_while_waiting_for_the_first_token(make_harness: MakeHarness) -> None:
    h = await make_harness(first_token_timeout_s=10.0)
    h.primary.script(hang_before_first_token())
    task = asyncio.create_task(run_turn(h))
    await h.primary.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.primary.wait_for_disconnect(within_s=1.0)
    assert h.secondary.request_count == 0


async def test_bad_request_is_not_retried_nor_sent_elsewhere(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.primary.script(status(400))
    turn = await run_turn(h)
    assert isinstance(turn.error, ProviderBadRequest)
    assert turn.events == []
    assert (h.primary.request_count, h.secondary.request_count) == (1, 0)


async def test_every_provider_failing_raises_the_last_error(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=1)
    h.primary.default = status(503)
    h.secondary.default = status(503)
    turn = await run_turn(h)
    assert isinstance(turn.error, ProviderOverloaded)
    assert turn.error.provider == h.chain[1].kind
    assert (h.primary.request_count, h.secondary.request_count) == (2, 2)


async def test_retry_after_beyond_the_limit_falls_back_at_once() -> None:
    async with serve(FAKES["openai"]()) as primary, serve(FAKES["anthropic"]()) as secondary:
        providers = {"openai": provider_for("openai", primary, TEST_OPTIONS),
                     "anthropic": provider_for("anthropic", secondary, TEST_OPTIONS)}
        registry = ProviderRegistry(providers, options=dict.fromkeys(providers, TEST_OPTIONS))
        sleeps = RecordingSleep()
        router = Router(registry, sleep=sleeps)
        primary.script(status(429, retry_after=30))
        chain = (ProviderSpec("openai", "gpt-x"), ProviderSpec("anthropic", "claude-x"))
        try:
            events: list[ProviderEvent | RouteChosen] = [
                e async for e in router.stream("acme", chain, REQUEST)]
        finally:
            await registry.aclose()
    assert events[0] == RouteChosen("anthropic", "claude-x")
    assert sleeps.delays == []
    assert primary.request_count == 1
