"""``mock``: a real, deterministic provider for demos, tests and benchmarks.

It answers any request with text derived from the request itself (the same request always
gets the same answer), one word per delta, with the per-token delays configured for the
brand or model, and reports honest usage: prompt and completion tokens counted with the
same tokenizer the gateway uses. Behaviour is chosen by configuration, never by test hooks.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Callable

from gateway.config import MockSettings
from memory.tokens import TokenCounter
from providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta, UsageReport

_WORDS = (
    "the answer depends on context and on what you want to achieve so let us look at "
    "a few options together first consider your audience then the message and finally "
    "the channel that carries it each step builds on the last one clear plan helps"
).split()


def mock_answer_words(request: ProviderRequest, count: int) -> list[str]:
    """Deterministic words for ``request``: a pure function of its messages and model."""
    seed = hashlib.blake2b(digest_size=8)
    seed.update(request.model.encode())
    for message in request.messages:
        seed.update(message.role.encode() + b"\0" + message.content.encode() + b"\0")
    state = int.from_bytes(seed.digest(), "big")
    words = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        words.append(_WORDS[(state >> 33) % len(_WORDS)])
    return words


class MockProvider:
    """Deterministic streaming provider; settings come from ``settings_for(model)``."""

    def __init__(self, settings_for: Callable[[str], MockSettings], counter: TokenCounter) -> None:
        self._settings_for = settings_for
        self._counter = counter

    @property
    def name(self) -> str:
        return "mock"

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        settings = self._settings_for(request.model)
        user_turns = sum(1 for m in request.messages if m.role == "user")
        words = mock_answer_words(request, settings.answer_tokens)
        prompt_tokens = self._counter.count_messages(request.messages)
        parts = [f"[{len(request.messages)} messages, turn {user_turns}]", *words]
        emitted, emitted_tokens = "", 0
        truncated = False
        if settings.first_token_delay_ms:
            await asyncio.sleep(settings.first_token_delay_ms / 1000)
        for word in parts:
            text = " " + word if emitted else word
            tokens = self._counter.count(text)  # words split at spaces: counts add up
            if emitted_tokens + tokens > request.max_tokens:
                truncated = True
                continue  # never report more completion tokens than max_tokens
            if emitted and settings.token_delay_ms:
                await asyncio.sleep(settings.token_delay_ms / 1000)
            emitted, emitted_tokens = emitted + text, emitted_tokens + tokens
            yield TextDelta(text)
        completion_tokens = self._counter.count(emitted)
        yield UsageReport(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        yield Finish("length" if truncated else "stop")

    async def aclose(self) -> None:
        return None
