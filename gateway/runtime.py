"""The gateway's runtime: every shared resource, created and closed in one place.

``open_runtime(config)`` is an async context manager used by the aiohttp app's
``cleanup_ctx`` and by the Lambda handlers alike, so both run the same core. Backends are
chosen by URL (``CHATGATE_REDIS_URL``, ``CHATGATE_HISTORY_URL``, ``CHATGATE_ARCHIVE_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from budgets import BudgetAlerter, BudgetLedger, RateLimiter, publisher_from_settings
from gateway.auth import TokenVerifier, build_verifier
from gateway.budget_gate import BudgetGate
from gateway.config import Config
from gateway.observability import Metrics
from gateway.service import ChatService
from gateway.summaries import Summarizer
from memory.cold import open_archive
from memory.cold.base import Archive
from memory.conversations import ConversationStore, TurnJournal
from memory.hot import HotMemory
from memory.journal import DirectJournal, OutboxJournal
from memory.persister import Outbox, Persister
from memory.pipelining import AutoPipeline
from memory.preferences import PreferenceStore
from memory.redis_client import (
    RedisClient,
    connect_pipeline_client,
    connect_redis,
    is_embedded,
)
from memory.response_cache import ResponseCache
from memory.tokens import TokenCounter
from memory.warm import open_history
from memory.warm.base import HistoryStore
from providers.registry import ProviderRegistry, build_registry
from providers.router import Router

log = structlog.get_logger("chatgate.runtime")


@dataclass(slots=True)
class Runtime:
    config: Config
    metrics: Metrics
    redis: RedisClient
    verifier: TokenVerifier
    dev_secret: str | None
    counter: TokenCounter
    registry: ProviderRegistry
    hot: HotMemory
    history: HistoryStore
    archive: Archive | None
    conversations: ConversationStore
    ledger: BudgetLedger
    service: ChatService
    http: aiohttp.ClientSession
    persister: Persister | None
    cache: ResponseCache
    preferences: PreferenceStore
    summarizer: Summarizer

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str, *,
                                  archived: bool) -> None:
        """Remove a conversation from every tier (the caller checked ownership); the cold
        archive is searched only for plans that archive."""
        await self.hot.forget(brand, conversation_id)
        await self.history.delete_conversation(brand, user_id, conversation_id)
        if self.archive is not None and archived:
            await self.archive.delete_conversation(brand, user_id, conversation_id)


RUNTIME_KEY = web.AppKey("runtime", Runtime)
REDIS_BATCH_TIMEOUT_S = 5.0  # one pipelined batch of Redis calls, as redis-py bounds a reply


@asynccontextmanager
async def open_runtime(config: Config, *, clock: Callable[[], float] = time.time,
                       metrics: Metrics | None = None,
                       run_persister: bool = True) -> AsyncIterator[Runtime]:
    settings, limits = config.settings, config.limits
    metrics = metrics or Metrics()
    counter = TokenCounter()
    verifier, secret = build_verifier(config)
    async with contextlib.AsyncExitStack() as stack:
        redis = connect_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        history = await open_history(settings.history_url, clock=clock)
        stack.push_async_callback(history.aclose)
        archive = await open_archive(settings.archive_url)
        if archive is not None:
            stack.push_async_callback(archive.aclose)
        registry = build_registry(config, counter)
        stack.push_async_callback(registry.aclose)
        await registry.start()
        # One for the process: every turn's calls share it. On a real server its own
        # client reads replies without per-reply timers; each batch is bounded instead.
        # It also keeps its connection between batches (no pool checkout per batch).
        pipeline_redis = connect_pipeline_client(settings.redis_url)
        if pipeline_redis is None:
            pipeline = AutoPipeline(redis, timeout_s=REDIS_BATCH_TIMEOUT_S)
        else:
            stack.push_async_callback(pipeline_redis.aclose)
            pipeline = AutoPipeline(pipeline_redis, timeout_s=REDIS_BATCH_TIMEOUT_S,
                                    hold_connection=True)
        journal, persister = _journal(redis, pipeline, history, archive, embedded=is_embedded(
            settings.redis_url), claim_idle_ms=limits.outbox_claim_idle_ms)
        hot = HotMemory(redis, ttl_s=limits.hot_ttl_s, max_messages=limits.hot_messages,
                        clock=clock, pipeline=pipeline)
        conversations = ConversationStore(hot, journal, history,
                                          recent_messages=limits.hot_messages)
        alerter = BudgetAlerter(publisher_from_settings(settings, http=http))
        ledger = BudgetLedger(redis, clock=clock, lease_s=limits.reservation_lease_s,
                              alerts=alerter, pipeline=pipeline)
        gate = BudgetGate(ledger, RateLimiter(redis, clock=clock, pipeline=pipeline))
        cache = ResponseCache(redis, pipeline=pipeline)
        preferences = PreferenceStore(redis, pipeline=pipeline)
        router = Router(registry)
        summarizer = Summarizer(config=config, router=router, ledger=ledger, history=history,
                                hot=hot, redis=redis, counter=counter)
        stack.push_async_callback(summarizer.drain)
        service = ChatService(config=config, router=router,
                              conversations=conversations, counter=counter, gate=gate,
                              metrics=metrics, cache=cache, preferences=preferences,
                              summarizer=summarizer, clock=clock)
        stack.push_async_callback(service.drain)  # before Redis closes
        runtime = Runtime(config=config, metrics=metrics, redis=redis, verifier=verifier,
                          dev_secret=secret, counter=counter, registry=registry, hot=hot,
                          history=history, archive=archive, conversations=conversations,
                          ledger=ledger, service=service, http=http, persister=persister,
                          cache=cache, preferences=preferences, summarizer=summarizer)
        if persister is not None and run_persister:
            task = asyncio.create_task(persister.run())
            stack.push_async_callback(_stop_persister, persister, task)
        yield runtime


def _journal(redis: RedisClient, pipeline: AutoPipeline, history: HistoryStore,
             archive: Archive | None, *, embedded: bool,
             claim_idle_ms: int) -> tuple[TurnJournal, Persister | None]:
    if embedded:
        return DirectJournal(history, archive), None
    outbox = Outbox(redis, pipeline=pipeline)
    persister = Persister(redis, history, archive, claim_idle_ms=claim_idle_ms)
    return OutboxJournal(outbox), persister


async def _stop_persister(persister: Persister, task: asyncio.Task[None]) -> None:
    """Shutdown flushes: stop the loop, then drain what is left in the outbox.

    Cancelling the loop mid-batch is safe: unacknowledged entries stay pending for this
    consumer, ``drain`` reads them again, and warm writes are idempotent per turn."""
    persister.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    try:
        await persister.drain()
    except Exception:  # the entries stay in the outbox; the next process persists them
        log.exception("outbox_drain_failed_at_shutdown")
