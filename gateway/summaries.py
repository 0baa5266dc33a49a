"""Rolling summaries: when a conversation outgrows its window, summarize the older part.

After a turn whose history no longer fit the plan's window, the service schedules a
background job (at most one per conversation at a time, across processes through a Redis
lock). The job folds the previous summary and the messages it does not yet cover (all but
the last few, which the context keeps verbatim) into a new summary with the brand's own
provider chain, stores it in warm history and the hot cache, and charges its tokens to the
brand's month (under a pseudo-user, never to the user's day, month or conversation).
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing

import structlog

from budgets import BudgetLedger, BudgetLimits, Refused, ReservationRequest, cost_usd
from gateway.config import Brand, Config
from memory.context import TAIL_MESSAGES
from memory.hot import HotMemory
from memory.redis_client import RedisClient
from memory.tokens import TokenCounter
from memory.warm.base import HistoryStore
from providers.base import ChatMessage, ProviderRequest, TextDelta
from providers.errors import ProviderError
from providers.router import Router
from providers.usage import UsageSnapshot, accumulate, final_usage

log = structlog.get_logger("chatgate.summaries")

SUMMARIZER_USER = "~summarizer"  # the brand-billed pseudo-user (never a JWT subject form)
SUMMARY_MAX_TOKENS = 300
INPUT_BUDGET_TOKENS = 3000
LOCK_S = 120
INSTRUCTIONS = ("Summarize the conversation so far for your own later reference. Keep names, "
                "facts, numbers, decisions and open questions; under 200 words; no preamble.")


class Summarizer:
    def __init__(self, *, config: Config, router: Router, ledger: BudgetLedger,
                 history: HistoryStore, hot: HotMemory, redis: RedisClient,
                 counter: TokenCounter) -> None:
        self._config = config
        self._router = router
        self._ledger = ledger
        self._history = history
        self._hot = hot
        self._redis = redis
        self._counter = counter
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, brand: str, user_id: str, conversation_id: str) -> None:
        """Start a background summary of this conversation unless one is running here."""
        name = f"summary:{brand}:{conversation_id}"
        if any(t.get_name() == name for t in self._tasks):
            return
        task = asyncio.create_task(self._guarded(brand, user_id, conversation_id), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the summaries in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _guarded(self, brand: str, user_id: str, conversation_id: str) -> None:
        lock = f"cg:{{{brand}}}:summary-lock:{conversation_id}"
        if not await self._redis.set(lock, b"1", nx=True, ex=LOCK_S):
            return
        try:
            await self.summarize(brand, user_id, conversation_id)
        except (ProviderError, OSError) as exc:
            log.warning("summary_failed", brand=brand, conversation_id=conversation_id,
                        error=type(exc).__name__)
        finally:
            await self._redis.delete(lock)

    async def summarize(self, brand_name: str, user_id: str, conversation_id: str) -> bool:
        """Fold uncovered older messages into the summary; True if a new one was stored."""
        brand = self._config.brands[brand_name]
        meta = await self._history.get_conversation(brand_name, user_id, conversation_id)
        if meta is None:
            return False
        messages = await self._history.messages(brand_name, user_id, conversation_id)
        end = len(messages) - TAIL_MESSAGES
        start = min(meta.summary_covers, max(end, 0))
        if end <= start:
            return False
        older = [ChatMessage(m.role, m.content) for m in messages[start:end]]
        prompt, covered = self._prompt(meta.summary or "", older)
        summary = await self._generate(brand, conversation_id, prompt)
        if not summary:
            return False
        covers = start + covered
        if not await self._history.save_summary(brand_name, user_id, conversation_id, summary,
                                                covers):
            return False  # deleted (or expired) meanwhile
        await self._hot.set_summary(brand_name, conversation_id, summary)
        log.info("summary_stored", brand=brand_name, conversation_id=conversation_id,
                 covers_messages=covers)
        return True

    def _prompt(self, previous: str, older: list[ChatMessage]
                ) -> tuple[tuple[ChatMessage, ...], int]:
        """The summarization request, and how many of ``older`` it covers (oldest first,
        as many as fit the input budget)."""
        transcript: list[str] = []
        used = self._counter.count(previous)
        for message in older:
            line = f"{message.role}: {message.content}"
            cost = self._counter.count(line)
            if transcript and used + cost > INPUT_BUDGET_TOKENS:
                break
            transcript.append(line)
            used += cost
        body = (f"Earlier summary: {previous}\n\n" if previous else "") + "\n".join(transcript)
        return (ChatMessage("system", INSTRUCTIONS), ChatMessage("user", body)), len(transcript)

    async def _generate(self, brand: Brand, conversation_id: str,
                        messages: tuple[ChatMessage, ...]) -> str:
        request_id = "sum-" + uuid.uuid4().hex
        prompt_tokens = self._counter.count_messages(messages)
        reserved = await self._ledger.reserve(ReservationRequest(
            brand=brand.name, user_id=SUMMARIZER_USER, conversation_id="summaries",
            request_id=request_id, tokens=prompt_tokens + SUMMARY_MAX_TOKENS,
            limits=BudgetLimits(user_day=-1, user_month=-1, brand_month=brand.monthly_budget,
                                conversation=-1, alert_threshold=brand.alert_threshold)))
        if isinstance(reserved, Refused):
            log.warning("summary_skipped_budget", brand=brand.name, scope=reserved.scope)
            return ""
        request = ProviderRequest(model=brand.providers[0].model, messages=messages,
                                  max_tokens=SUMMARY_MAX_TOKENS, request_id=request_id)
        parts: list[str] = []
        snapshot, model = UsageSnapshot(), brand.providers[0].model
        try:
            async with aclosing(self._router.stream(brand.name, brand.providers,
                                                    request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    elif event.type == "route":
                        model = event.model
                    else:
                        snapshot = accumulate(event, snapshot)
        finally:
            text = "".join(parts)
            usage = final_usage(snapshot, counted_prompt=prompt_tokens,
                                count_completion=lambda: self._counter.count(text))
            await self._ledger.settle(
                brand=brand.name, request_id=request_id, actual_tokens=usage.total_tokens,
                cost_usd=cost_usd(self._config.price(model), usage.prompt_tokens,
                                  usage.completion_tokens))
        return text.strip()
