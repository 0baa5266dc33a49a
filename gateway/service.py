"""ChatService: the one transport-independent pipeline for a chat turn.

    resolve conversation (hot → warm) → rate limit → assemble context → reserve budget
    → cache lookup → provider stream (router) → sink → settle budget → record the turn

The service writes frames to a :class:`~gateway.sink.Sink` and never knows whether they
go to an aiohttp WebSocket, an SSE response or API Gateway. Every path out of a turn
that reserved budget settles it: done, cancel, provider failure, client gone.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from budgets import cost_usd
from gateway.auth import Principal
from gateway.config import Brand, Config, Plan, ProviderSpec
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    from_provider_error,
)
from gateway.frames import ChatFrame, DeltaFrame, DoneFrame, ErrorFrame, StartFrame
from gateway.gates import Admission, TurnGate
from gateway.observability import Metrics
from gateway.sink import Sink, SinkClosed
from gateway.summaries import Summarizer
from memory.context import AssembledContext, ContextTooLarge, assemble_context
from memory.conversations import ConversationStore, LoadedConversation
from memory.ids import random_hex
from memory.pipelining import then, together
from memory.preferences import PreferenceStore, preferences_prompt
from memory.records import StoredMessage, TurnRecord
from memory.response_cache import CachedAnswer, CacheKey, Flight, ResponseCache
from memory.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TokenCounter
from providers.base import ChatMessage, ProviderRequest, TextDelta
from providers.errors import ProviderError
from providers.router import RouteChosen, Router
from providers.usage import Usage, UsageSnapshot, accumulate, final_usage

log = structlog.get_logger("chatgate.turn")
SETTLE_ATTEMPTS = 4
SETTLE_BACKOFF_S = 0.05


@dataclass(slots=True)
class TurnControl:
    """Set by the transport when the client sends ``cancel`` for this turn."""

    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _hooks: list[Callable[[], object]] = field(default_factory=list)

    def cancel(self) -> None:
        self.cancelled.set()
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], object]) -> None:
        """Call ``hook`` once when the turn is cancelled (at once if it already is)."""
        if self.cancelled.is_set():
            hook()
        else:
            self._hooks.append(hook)

    def discard(self, hook: Callable[[], object]) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)


@dataclass(slots=True)
class TurnState:
    """What one turn has done so far; everything the settle and the log line need."""

    request_id: str
    frame: ChatFrame
    principal: Principal
    started_at: float
    conversation_id: str = ""
    provider: str = ""
    model: str = ""
    cached: bool = False
    prompt_tokens: int = 0
    parts: list[str] = field(default_factory=list)
    snapshot: UsageSnapshot = field(default_factory=UsageSnapshot)
    timings: dict[str, float] = field(default_factory=dict)
    outcome: str = "error"
    admission: Admission | None = None
    settled: bool = False
    new_conversation: bool = False
    attempted: ProviderSpec | None = None  # the chain's first link, priced when none answered
    usage: Usage | None = None  # computed once, after the stream has ended
    text_tokens: int | None = None  # the answer counted by us, once
    user_tokens: int = 0  # the user message, as counted while assembling the context

    def mark(self, stage: str) -> None:
        self.timings[stage] = round((time.perf_counter() - self.started_at) * 1000, 3)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True, slots=True)
class _TurnPlan:
    """What a turn was resolved to before any budget or provider is asked."""

    brand: Brand
    plan: Plan
    chain: tuple[ProviderSpec, ...]
    loaded: LoadedConversation
    context: AssembledContext
    max_tokens: int


def _pieces(text: str, size: int = 16) -> list[str]:
    """A cached answer re-streamed in word-aligned pieces of about ``size`` characters."""
    pieces, current = [], ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > size and current:
            pieces.append(current + " ")
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


class ChatService:
    def __init__(self, *, config: Config, router: Router, conversations: ConversationStore,
                 counter: TokenCounter, gate: TurnGate, metrics: Metrics,
                 cache: ResponseCache, preferences: PreferenceStore,
                 summarizer: Summarizer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._summarizer = summarizer
        self._background: set[asyncio.Future[Any]] = set()
        self._cache = cache
        self._preferences = preferences
        self._fingerprints = {name: hashlib.sha256(repr(brand).encode()).hexdigest()[:16]
                              for name, brand in config.brands.items()}
        self._router = router
        self._conversations = conversations
        self._counter = counter
        self._gate = gate
        self._metrics = metrics
        self._clock = clock

    async def drain(self) -> None:
        """Wait for reservations still under way that turns will not use, and for their
        releases (shutdown calls it before Redis closes)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def chat(self, principal: Principal, frame: ChatFrame, sink: Sink,
                   control: TurnControl | None = None) -> TurnState:
        """Run one turn to completion, writing frames to ``sink``. Never raises for the
        client's or the provider's faults: those end as an ``error`` frame."""
        control = control or TurnControl()
        state = TurnState(request_id=random_hex(), frame=frame, principal=principal,
                          started_at=time.perf_counter())
        try:
            await self._run(state, sink, control)
        except GatewayError as exc:
            await self._fail(state, sink, exc)
        except ProviderError as exc:
            await self._fail(state, sink, from_provider_error(exc))
        except SinkClosed:
            state.outcome = "client_gone"
        except asyncio.CancelledError:
            state.outcome = "client_gone"
            raise
        except Exception:
            log.exception("turn_failed", request_id=state.request_id)
            await self._fail(state, sink, InternalError("internal error"))
        finally:
            await self._settle(state)
            self._log(state)
        return state

    async def _run(self, state: TurnState, sink: Sink, control: TurnControl) -> None:
        principal, frame = state.principal, state.frame
        brand, plan = self._brand_and_plan(principal)
        chain = self._chain(brand, frame.model)
        rate = self._gate.check_rate(principal, brand)
        prefs_read = self._preferences.get(brand.name, principal.user_id)
        if frame.conversation_id is None:  # a new conversation: nothing to load
            loaded = self._conversations.start(principal.brand, principal.user_id)
            _, prefs = await together(rate, prefs_read)
        else:  # independent calls at once: one round trip
            _, loaded, prefs = await together(
                rate, self._load_conversation(principal, frame.conversation_id), prefs_read)
        state.conversation_id, state.new_conversation = loaded.conversation_id, loaded.is_new
        state.mark("conversation")
        requested = frame.max_tokens or self._config.limits.default_max_tokens
        context, max_tokens, state.user_tokens = self._assemble(brand, plan, loaded, frame,
                                                                requested, prefs)
        state.prompt_tokens = context.prompt_tokens
        plan_ = _TurnPlan(brand, plan, chain, loaded, context, max_tokens)
        key = self._cache_key(plan_, state, prefs)
        if key is None:
            await self._answer(state, sink, control, plan_)
        else:
            await self._answer_with_cache(state, sink, control, plan_, key)

    async def _answer(self, state: TurnState, sink: Sink, control: TurnControl,
                      turn: _TurnPlan, lead: tuple[CacheKey, Flight] | None = None,
                      reserve: asyncio.Future[Admission] | None = None) -> None:
        """Reserve (or take the reservation already under way), stream from the provider
        chain, record, settle, (cache), send ``done``."""
        state.admission = await self._admitted(state, reserve or self._reserve(state, turn))
        state.attempted = turn.chain[0]
        state.mark("reserve")
        request = ProviderRequest(model=turn.chain[0].model, messages=turn.context.messages,
                                  max_tokens=state.admission.max_tokens,
                                  request_id=state.request_id)
        events = self._router.stream(turn.brand.name, turn.chain, request)
        await self._stream(state, sink, control, events)
        state.mark("stream")
        if not state.provider:  # cancelled before any provider answered: start, then done
            spec = turn.chain[0]
            await sink.send(StartFrame(state.frame.id, state.conversation_id, spec.kind,
                                       spec.model))
        # Record, settle and publish are independent: run together, their Redis calls
        # share a round trip. All of them finish before ``done``.
        ending: list[Awaitable[None]] = [self._settle(state)]
        if state.text:  # an empty (cancelled) answer is not history
            ending.append(self._record(state, turn.loaded, turn.plan))
        if lead is not None and (publish := self._publish(state, turn, *lead)) is not None:
            ending.append(publish)
        for outcome in await together(*ending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        state.mark("record")
        await sink.send(self._done_frame(state))
        if self._summarizer and turn.context.history_included < turn.context.history_total:
            self._summarizer.schedule(turn.brand.name, state.principal.user_id,
                                      state.conversation_id)

    def _reserve(self, state: TurnState, turn: _TurnPlan) -> asyncio.Future[Admission]:
        # A gate's coroutine becomes a task; a future (BudgetGate's: its script is queued
        # already) is taken as it is.
        return asyncio.ensure_future(self._gate.admit(
            state.principal, turn.brand, turn.plan, conversation_id=state.conversation_id,
            request_id=state.request_id, prompt_tokens=turn.context.prompt_tokens,
            max_tokens=turn.max_tokens))

    async def _admitted(self, state: TurnState,
                        reserve: asyncio.Future[Admission]) -> Admission:
        """Wait for the reservation under a shield: if the client goes away while the
        script runs, what it reserved is released at once instead of waiting for its lease."""
        try:
            return await asyncio.shield(reserve)
        except asyncio.CancelledError:
            self._release_unused(state.principal, reserve)
            raise

    def _keep(self, future: asyncio.Future[Any]) -> None:
        """Background work that :meth:`drain` waits for."""
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def _release_unused(self, principal: Principal,
                        reserve: asyncio.Future[Admission]) -> None:
        """A reservation the turn will not use (a cached answer, or a client gone while it
        was being made): settled at zero once it exists; a refusal is simply dropped."""
        def release(done: asyncio.Future[Admission]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            self._keep(asyncio.ensure_future(self._gate_release(principal, done.result())))

        reserve.add_done_callback(release)
        self._keep(reserve)  # shutdown waits for it, then for its release

    async def _gate_release(self, principal: Principal, admission: Admission) -> None:
        try:
            await self._gate.settle(principal, admission, usage=Usage(0, 0), cost_usd=0.0)
        except (OSError, RedisError) as exc:  # its lease releases it
            log.warning("release_failed", request_id=admission.request_id,
                        error=type(exc).__name__)

    # --- response cache -----------------------------------------------------------------

    def _cache_key(self, turn: _TurnPlan, state: TurnState,
                   prefs: dict[str, str]) -> CacheKey | None:
        """The cache key for a first turn of a caching brand, else None."""
        brand, frame = turn.brand, state.frame
        if brand.cache == "off" or not turn.loaded.is_new or any(
                m.role != "system" for m in frame.prior):
            return None
        per_user = brand.cache == "user" or bool(prefs)
        return self._cache.key(
            brand=brand.name, config_fingerprint=self._fingerprints[brand.name],
            model=turn.chain[0].model, system_prompt=turn.context.messages[0].content
            if turn.context.messages[0].role == "system" else "",
            query=frame.content, user_id=state.principal.user_id if per_user else None)

    async def _answer_with_cache(self, state: TurnState, sink: Sink, control: TurnControl,
                                 turn: _TurnPlan, key: CacheKey) -> None:
        async with self._cache.flight(key) as flight:
            if not flight.leader:  # the same question is being answered in this process
                hit = await self._cache.wait(flight)
            else:
                # One round trip: the cached answer or the lock to answer it, and the
                # reservation a miss needs next. A hit releases that reservation unused
                # (a cached answer spends no budget, and a refusal does not stop it).
                reserve = self._reserve(state, turn)
                try:
                    hit = await self._cache.lock_or_wait(key, flight)
                except BaseException:
                    self._release_unused(state.principal, reserve)
                    raise
                if hit is None:
                    await self._lead(state, sink, control, turn, key, flight, reserve)
                    return
                self._release_unused(state.principal, reserve)
                flight.future.set_result(hit)
        self._metrics.series(self._metrics.cache, turn.brand.name,
                            "hit" if hit else "miss").inc()
        if hit is None:  # the leader failed: answer this one ourselves, uncached
            await self._answer(state, sink, control, turn)
        else:
            await self._serve_cached(state, sink, turn, hit)

    async def _lead(self, state: TurnState, sink: Sink, control: TurnControl,
                    turn: _TurnPlan, key: CacheKey, flight: Flight,
                    reserve: asyncio.Future[Admission]) -> None:
        self._metrics.series(self._metrics.cache, turn.brand.name, "miss").inc()
        try:
            await self._answer(state, sink, control, turn, (key, flight), reserve)
        finally:
            if not (flight.future.done() and flight.future.result() is not None):
                await self._cache.unlock(key)  # no answer was published (which unlocks)

    def _publish(self, state: TurnState, turn: _TurnPlan, key: CacheKey,
                 flight: Flight) -> asyncio.Future[None] | None:
        """The leader stores a complete answer (before its ``done``), then wakes its
        followers (a future: the script is queued at once); None for an answer that is
        not cached (incomplete or empty)."""
        if state.outcome != "stop" or not state.text:
            return None
        answer = CachedAnswer(state.text, state.provider, state.model, "stop")
        stored = self._cache.publish(key, flight, answer, ttl_s=turn.brand.cache_ttl_s)
        return then(stored, lambda _: flight.future.set_result(answer))

    async def _serve_cached(self, state: TurnState, sink: Sink, turn: _TurnPlan,
                            hit: CachedAnswer) -> None:
        """Stream a cached answer: no provider call, no tokens, no budget."""
        state.cached, state.provider, state.model = True, hit.provider, hit.model
        await sink.send(StartFrame(state.frame.id, state.conversation_id, hit.provider,
                                   hit.model, cached=True))
        for piece in _pieces(hit.text):
            if not state.parts:
                state.mark("first_token")
            state.parts.append(piece)
            await sink.send(DeltaFrame(state.frame.id, piece))
        state.outcome = hit.finish_reason
        state.mark("stream")
        await self._record(state, turn.loaded, turn.plan)
        await sink.send(self._done_frame(state))

    # --- stages -------------------------------------------------------------------------

    def _brand_and_plan(self, principal: Principal) -> tuple[Brand, Plan]:
        brand, plan = self._config.brand(principal.brand), self._config.plan(principal.plan)
        if brand is None or plan is None:  # the verifier checked both; config may have changed
            raise NotFound("brand or plan no longer configured")
        return brand, plan

    @staticmethod
    def _chain(brand: Brand, model: str | None) -> tuple[ProviderSpec, ...]:
        if model is None:
            return brand.providers
        chain = tuple(s for s in brand.providers if s.model == model)
        if not chain:
            offered = ", ".join(sorted({s.model for s in brand.providers}))
            raise InvalidRequest(f"model {model!r} is not offered (offered: {offered})")
        return chain

    async def _load_conversation(self, principal: Principal,
                                 conversation_id: str) -> LoadedConversation:
        loaded = await self._conversations.load(principal.brand, principal.user_id,
                                                conversation_id)
        if loaded is None:
            raise NotFound("conversation not found")
        return loaded

    def _assemble(self, brand: Brand, plan: Plan, loaded: LoadedConversation,
                  frame: ChatFrame, requested: int,
                  prefs: dict[str, str]) -> tuple[AssembledContext, int, int]:
        """The context, ``max_tokens`` capped so that prompt + answer fit the window, and the
        new message's own token count (for its stored record)."""
        content, prior = frame.content, frame.prior
        new_message = ChatMessage("user", content)
        system_prompt = "\n\n".join(p for p in [
            brand.system_prompt, preferences_prompt(prefs),
            *(m.content for m in prior if m.role == "system")] if p).strip()
        head = [ChatMessage("system", system_prompt)] if system_prompt else []
        known: dict[ChatMessage, int] = {  # message -> tokens: nothing is encoded twice
            new_message: TOKENS_PER_MESSAGE + self._counter.count(content)}  # not remembered
        count_messages = functools.partial(self._count_known, known)
        floor = count_messages([*head, new_message])
        if floor >= plan.max_context_window:
            raise InvalidRequest(f"message too long: it needs {floor} tokens and this plan's "
                                 f"context window is {plan.max_context_window}")
        max_tokens = min(requested, plan.max_context_window - floor)
        history = [m for m in prior if m.role != "system" and m.content]
        for stored in loaded.messages:
            if stored.content:  # an empty message is never sent upstream
                message = ChatMessage(stored.role, stored.content)
                if stored.tokens:
                    known[message] = TOKENS_PER_MESSAGE + stored.tokens
                history.append(message)
        try:
            context = assemble_context(
                system_prompt=system_prompt, summary=loaded.summary, history=history,
                new_message=new_message, window=plan.max_context_window,
                max_tokens=max_tokens, count_messages=count_messages)
        except ContextTooLarge as exc:  # cannot happen after the floor check; kept typed
            raise InvalidRequest(str(exc)) from None
        return context, max_tokens, known[new_message] - TOKENS_PER_MESSAGE

    def _count_known(self, known: dict[ChatMessage, int],
                     messages: Sequence[ChatMessage]) -> int:
        total = REPLY_PRIMING_TOKENS
        for message in messages:
            tokens = known.get(message)
            if tokens is None:  # prompts, summaries and sent history recur turn after turn
                counted = (self._counter.count_prompt(message.content)
                           if message.role == "system"
                           else self._counter.count_history(message.content))
                tokens = known[message] = TOKENS_PER_MESSAGE + counted
            total += tokens
        return total

    async def _stream(self, state: TurnState, sink: Sink, control: TurnControl,
                      events: AsyncIterator[object]) -> None:
        """Pump the stream to the sink in a task of its own, which the client's ``cancel``
        cancels. Awaiting it hands a cancel of this task on to it, and waits for it to
        finish (the stream closed); then only this task's own cancel propagates."""
        pump = asyncio.create_task(self._pump(state, sink, events))
        control.on_cancel(pump.cancel)
        try:
            await pump
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # cancelled from outside
                raise
            state.outcome = "cancelled"
            return
        finally:
            control.discard(pump.cancel)
        state.outcome = state.snapshot.finish_reason or "stop"

    async def _pump(self, state: TurnState, sink: Sink, events: AsyncIterator[object]) -> None:
        frame_id = state.frame.id
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TextDelta):
                    if not state.parts:
                        state.mark("first_token")
                    state.parts.append(event.text)
                    await sink.send(DeltaFrame(frame_id, event.text))
                elif isinstance(event, RouteChosen):
                    state.provider, state.model = event.provider, event.model
                    await sink.send(StartFrame(frame_id, state.conversation_id, event.provider,
                                               event.model, cached=state.cached))
                else:
                    state.snapshot = accumulate(event, state.snapshot)  # type: ignore[arg-type]

    def _record(self, state: TurnState, loaded: LoadedConversation,
                plan: Plan) -> asyncio.Future[None]:
        """The finished turn into memory (a future: its calls are made at once)."""
        usage = self._usage(state)
        now = self._clock()
        turn = TurnRecord(
            turn_id=state.request_id, conversation_id=state.conversation_id,
            user_id=state.principal.user_id, brand=state.principal.brand, plan=plan.name,
            user_message=StoredMessage("user", state.frame.content, now, state.user_tokens),
            assistant_message=StoredMessage("assistant", state.text, now,
                                            self._answer_tokens(state)),
            provider=state.provider, model=state.model, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=self._cost(state.model, usage),
            outcome=state.outcome, cached=state.cached, created_at=now,
            history_ttl_days=plan.history_ttl_days, archive=plan.archive,
            timings_ms=dict(state.timings))
        return self._conversations.record(loaded, turn)

    # --- endings ------------------------------------------------------------------------

    def _usage(self, state: TurnState) -> Usage:
        """What the turn is billed, computed once after its stream ended: provider figures
        where reported, else counted; nothing when no provider answered and none reported
        usage (a refused or failed request), the prompt plus output for a broken stream."""
        if state.usage is None:
            unanswered = not state.provider and state.snapshot.reported_prompt is None
            if state.cached or (unanswered and state.outcome != "cancelled"):
                state.usage = Usage(0, 0)
            else:
                state.usage = final_usage(
                    state.snapshot, counted_prompt=state.prompt_tokens,
                    count_completion=functools.partial(self._text_tokens, state))
        return state.usage

    def _answer_tokens(self, state: TurnState) -> int:
        """The stored answer's size for later context windows: the provider's own count of
        a complete answer when it reported one (no need to encode it again), else ours."""
        reported = state.snapshot.reported_completion
        if reported is not None and state.outcome in ("stop", "length"):
            return reported
        return self._text_tokens(state)

    def _text_tokens(self, state: TurnState) -> int:
        if state.text_tokens is None:
            state.text_tokens = self._counter.count(state.text)
        return state.text_tokens

    def _priced_model(self, state: TurnState) -> str:
        return state.model or (state.attempted.model if state.attempted else "")

    def _cost(self, model: str, usage: Usage) -> float:
        return round(cost_usd(self._config.price(model), usage.prompt_tokens,
                              usage.completion_tokens), 10)

    def _done_frame(self, state: TurnState) -> DoneFrame:
        usage = self._usage(state)
        state.mark("total")
        return DoneFrame(id=state.frame.id, conversation_id=state.conversation_id,
                         usage=usage.as_dict(),
                         cost_usd=self._cost(self._priced_model(state), usage),
                         cached=state.cached, finish_reason=state.outcome,
                         timings_ms=dict(state.timings))

    async def _fail(self, state: TurnState, sink: Sink, error: GatewayError) -> None:
        state.outcome = error.code
        if state.admission is None:
            self._metrics.series(self._metrics.refusals, state.principal.brand,
                                 error.code).inc()
        extra = dict(error.extra)
        if state.conversation_id and not state.new_conversation:
            extra.setdefault("conversation_id", state.conversation_id)
        try:
            await sink.send(ErrorFrame(state.frame.id, error.code, error.message, extra))
        except SinkClosed:
            state.outcome = "client_gone"

    async def _settle(self, state: TurnState) -> None:
        """Settle once: before ``done`` on success, from ``finally`` on every other path."""
        if state.admission is None or state.settled:
            return
        usage = self._usage(state)
        cost = self._cost(self._priced_model(state), usage)
        for attempt in range(SETTLE_ATTEMPTS):  # settling is idempotent per request id
            try:
                await asyncio.shield(self._gate.settle(state.principal, state.admission,
                                                       usage=usage, cost_usd=cost))
                break
            except (OSError, RedisError) as exc:
                log.warning("settle_failed", request_id=state.request_id, attempt=attempt + 1,
                            error=type(exc).__name__)
                await asyncio.sleep(SETTLE_BACKOFF_S * 2 ** attempt)
        else:
            log.error("settle_abandoned", request_id=state.request_id,
                      tokens=usage.total_tokens)  # the lease releases the reservation
            return
        state.settled = True
        brand = state.principal.brand
        metrics = self._metrics
        metrics.series(metrics.tokens, brand, "prompt").inc(usage.prompt_tokens)
        metrics.series(metrics.tokens, brand, "completion").inc(usage.completion_tokens)
        metrics.series(metrics.cost, brand).inc(cost)

    def _log(self, state: TurnState) -> None:
        usage = self._usage(state) if state.admission else Usage(0, 0)
        brand = state.principal.brand
        metrics = self._metrics
        metrics.series(metrics.turns, brand, state.outcome).inc()
        if "first_token" in state.timings:
            metrics.series(metrics.first_token, brand).observe(
                state.timings["first_token"] / 1000)
        total = (time.perf_counter() - state.started_at)
        metrics.series(metrics.turn_seconds, brand).observe(total)
        log.info("turn", request_id=state.request_id, brand=brand,
                 user=state.principal.user_id, plan=state.principal.plan,
                 conversation_id=state.conversation_id or None, provider=state.provider or None,
                 model=state.model or None, cached=state.cached, outcome=state.outcome,
                 prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                 timings_ms=state.timings, duration_ms=round(total * 1000, 3))

