"""The router: walks a brand's provider chain until one answers.

Per provider of the chain (``kind:model``), in order:
  * its circuit breaker may skip it without a request (``CircuitOpen``);
  * an attempt must produce its first token (a text delta or a finish) within
    ``first_token_timeout_s``; usage reported before that is held back with it;
  * a retryable failure before the first token is retried with exponential backoff and
    full jitter (at least the provider's ``retry-after``) up to ``max_retries`` times while
    its circuit stays closed, then the next provider is tried; a timeout moves on to the
    next provider at once; a fatal failure (bad request, auth) ends the turn.
Once the first token has been handed on, the provider is committed: a failure, or a gap
longer than ``chunk_timeout_s`` waiting for its next event, raises
``StreamInterrupted(cause)`` (time the consumer spends between events does not count; one
:class:`~providers.idle_watch.IdleWatch` timer per stream keeps this cheap per event);
text that reached the client is never silently replaced by another provider's. A failure
after the provider's finish (its stop reason) is not an interruption: the answer is
whole, and the stream ends with that finish (logged, not counted against the breaker);
what follows a finish is waited for at most ``TRAILER_WAIT_S``. When
every provider fails, the last (real) error is raised.

The stream starts with a :class:`RouteChosen` naming the provider and model that answer,
and a ``Finish`` event, if any, is always its last event. Closing the stream (``aclose``,
or cancelling the consuming task) closes the upstream response at once. A provider with
an optional ``start()`` (a client opened on first use) is started before its first-token
clock runs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Literal

import structlog

from gateway.config import ProviderOptions, ProviderSpec
from providers.base import Finish, Provider, ProviderEvent, ProviderRequest, TextDelta
from providers.circuit import CircuitBreaker, CircuitBreakers, CircuitState
from providers.errors import (
    CircuitOpen,
    ProviderError,
    ProviderTimeout,
    RetryableProviderError,
    StreamInterrupted,
)
from providers.idle_watch import IdleWatch
from providers.registry import ProviderRegistry
from providers.retry import RetryPolicy, call_with_retry

log = structlog.get_logger("chatgate.router")
# How long the usage and last event a wire sends after its finish are waited for: they
# follow the finish at once, and the answer (whole by then) waits for them to end.
TRAILER_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class RouteChosen:
    provider: str
    model: str
    type: Literal["route"] = "route"


RoutedEvent = RouteChosen | ProviderEvent
ProviderStream = AsyncGenerator[ProviderEvent, None]


@dataclass(frozen=True, slots=True)
class _Started:
    """A provider that produced its first token; ``head`` holds the events so far, and
    ``watch`` bounds the wait for each following one (closed with the stream)."""

    route: RouteChosen
    head: tuple[ProviderEvent, ...]
    events: ProviderStream
    ended: bool
    options: ProviderOptions
    breaker: CircuitBreaker
    watch: IdleWatch


async def read_head(events: ProviderStream) -> tuple[tuple[ProviderEvent, ...], bool]:
    """Events up to and including the first text delta or finish; True if the stream ended."""
    head: list[ProviderEvent] = []
    while (event := await anext(events, None)) is not None:
        head.append(event)
        if isinstance(event, TextDelta | Finish):
            return tuple(head), False
    return tuple(head), True


class Router:
    """Routes a turn over a chain; holds the circuit breakers, so make one per app."""

    def __init__(self, registry: ProviderRegistry, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None,
                 trailer_wait_s: float = TRAILER_WAIT_S) -> None:
        self._registry = registry
        self._breakers = CircuitBreakers(clock)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._trailer_wait_s = trailer_wait_s

    def circuit_state(self, spec: ProviderSpec) -> CircuitState:
        return self._breakers.state(str(spec))

    async def stream(self, brand: str, chain: Sequence[ProviderSpec],
                     request: ProviderRequest) -> AsyncGenerator[RoutedEvent, None]:
        async with AsyncExitStack() as stack:
            started = await self._start(brand, chain, request, stack)
            yield started.route
            finish: Finish | None = None
            for event in started.head:
                if isinstance(event, Finish):
                    finish = event
                else:
                    yield event
            events, watch = started.events, started.watch
            if finish is not None:
                watch = self._trailer_watch(watch, stack)
            while not started.ended:  # the hot loop: one iteration per streamed event
                try:
                    with watch:
                        following = await anext(events)
                except StopAsyncIteration:
                    break
                except (TimeoutError, ProviderError) as exc:
                    if finish is None:
                        raise self._interrupted(started, exc) from exc
                    # The answer is whole (its stop reason came): only what follows it,
                    # the usage some wires send after the finish and the last event, is
                    # lost. The answer stands; usage not reported is counted.
                    log.warning("stream_cut_after_finish", provider=_name(started.route),
                                error=type(exc).__name__)
                    break
                if isinstance(following, Finish):
                    finish = following
                    watch = self._trailer_watch(watch, stack)
                else:
                    yield following
            if finish is not None:
                yield finish

    def _trailer_watch(self, watch: IdleWatch, stack: AsyncExitStack) -> IdleWatch:
        """The watch for what follows a finish: the trailer comes right after it, so the
        answer's end (its ``done``) waits for it at most ``trailer_wait_s``, not a whole
        ``chunk_timeout_s``."""
        if watch.timeout_s <= self._trailer_wait_s:
            return watch
        watch.close()
        trailer = IdleWatch(self._trailer_wait_s)
        stack.callback(trailer.close)
        return trailer

    async def _start(self, brand: str, chain: Sequence[ProviderSpec], request: ProviderRequest,
                     stack: AsyncExitStack) -> _Started:
        last: ProviderError | None = None
        for spec in chain:
            try:
                return await self._start_provider(brand, spec, request, stack)
            except RetryableProviderError as exc:
                if last is None or not isinstance(exc, CircuitOpen):
                    last = exc
        if last is None:
            raise ValueError(f"brand {brand!r} has an empty provider chain")
        raise last

    async def _start_provider(self, brand: str, spec: ProviderSpec, request: ProviderRequest,
                              stack: AsyncExitStack) -> _Started:
        provider = self._registry.get(spec.kind, brand)
        options = self._registry.options_for(spec.kind)
        breaker = self._breakers.get(str(spec), threshold=options.circuit_failure_threshold,
                                     cooldown_s=options.circuit_cooldown_s)
        attempt = request if request.model == spec.model else replace(request, model=spec.model)

        async def start_once() -> _Started:
            return await self._attempt(provider, spec, attempt, options, breaker, stack)

        def circuit_closed() -> bool:
            return breaker.state == "closed"

        return await call_with_retry(start_once, policy=RetryPolicy.from_options(options),
                                     sleep=self._sleep, rng=self._rng, may_retry=circuit_closed)

    async def _attempt(self, provider: Provider, spec: ProviderSpec, request: ProviderRequest,
                       options: ProviderOptions, breaker: CircuitBreaker,
                       stack: AsyncExitStack) -> _Started:
        if not breaker.try_acquire():
            log.info("provider_skipped", provider=str(spec), reason="circuit_open")
            raise CircuitOpen(f"{spec} skipped: circuit open", provider=spec.kind)
        await self._warm(provider, spec, breaker)
        events = provider.stream(request)
        try:
            async with asyncio.timeout(options.first_token_timeout_s):
                head, ended = await read_head(events)
        except TimeoutError as exc:
            await events.aclose()
            timeout = ProviderTimeout(f"{spec} sent no first token within "
                                      f"{options.first_token_timeout_s}s", provider=spec.kind)
            _record_failure(str(spec), breaker, timeout)
            raise timeout from exc
        except RetryableProviderError as exc:
            await events.aclose()
            _record_failure(str(spec), breaker, exc)
            raise
        except BaseException:  # fatal errors and cancellation say nothing about health
            await events.aclose()
            breaker.release()
            raise
        breaker.record_success()
        stack.push_async_callback(events.aclose)
        watch = IdleWatch(options.chunk_timeout_s)
        stack.callback(watch.close)
        route = RouteChosen(provider=provider.name, model=spec.model)
        return _Started(route, head, events, ended, options, breaker, watch)

    @staticmethod
    async def _warm(provider: Provider, spec: ProviderSpec, breaker: CircuitBreaker) -> None:
        """Open a lazily started client (Bedrock's) before the first-token clock runs."""
        start = getattr(provider, "start", None)
        if start is None:
            return
        try:
            await start()
        except RetryableProviderError as exc:
            _record_failure(str(spec), breaker, exc)
            raise
        except BaseException:
            breaker.release()
            raise

    @staticmethod
    def _interrupted(started: _Started, exc: TimeoutError | ProviderError) -> StreamInterrupted:
        """What a committed stream's failure becomes (a gap past ``chunk_timeout_s``, or
        the provider's error), counted against its breaker if it says so about health."""
        if isinstance(exc, TimeoutError):
            timeout_s = started.options.chunk_timeout_s
            cause: ProviderError = ProviderTimeout(
                f"{started.route.provider} sent nothing for {timeout_s}s",
                provider=started.route.provider)
        else:
            cause = exc
        if cause.retryable:
            _record_failure(_name(started.route), started.breaker, cause)
        return StreamInterrupted(cause)


def _name(route: RouteChosen) -> str:
    return f"{route.provider}:{route.model}"


def _record_failure(where: str, breaker: CircuitBreaker, error: ProviderError) -> None:
    """Count a failure against the breaker, and say so (and whether it opened the circuit)."""
    was = breaker.state
    breaker.record_failure()
    log.warning("provider_failed", provider=where, error=type(error).__name__,
                status=error.status, circuit=breaker.state)
    if breaker.state == "open" and was != "open":
        log.warning("circuit_opened", provider=where, failures=breaker.failures)
