"""Token counting: tiktoken encodings installed from the shipped copies, no network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken.load
import tiktoken.registry

from memory import tokens
from memory.tokens import (
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TokenCounter,
    install_offline_encoding,
)
from providers.base import ChatMessage


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty tiktoken cache, no already-built encodings, and no way to download."""
    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})

    def no_network(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    tokens.encoding.cache_clear()
    yield cache
    tokens.encoding.cache_clear()


def test_counts_offline_from_an_empty_cache(offline: Path) -> None:
    counter = TokenCounter("cl100k_base")
    assert counter.count("hello world") == 2
    assert any(offline.iterdir())  # the encoding was installed into the (temporary) cache


def test_install_is_idempotent(offline: Path) -> None:
    first = install_offline_encoding("cl100k_base")
    before = first.stat().st_mtime_ns
    second = install_offline_encoding("cl100k_base")
    assert first == second
    assert second.parent == offline
    assert second.stat().st_mtime_ns == before


def test_empty_text_is_zero_tokens() -> None:
    assert TokenCounter().count("") == 0


def test_special_token_text_is_counted_as_ordinary_text() -> None:
    # User text that looks like a special token must not raise or be treated as one.
    assert TokenCounter().count("<|endoftext|>") > 1


def test_count_message_adds_the_per_message_overhead() -> None:
    counter = TokenCounter()
    assert counter.count_message(ChatMessage("user", "hello world")) == 2 + TOKENS_PER_MESSAGE


def test_count_messages_adds_overhead_per_message_and_reply_priming() -> None:
    counter = TokenCounter()
    messages = [ChatMessage("system", "hello world"), ChatMessage("user", "hello world")]
    assert counter.count_messages(messages) == (
        REPLY_PRIMING_TOKENS + 2 * (2 + TOKENS_PER_MESSAGE))
    assert counter.count_messages([]) == REPLY_PRIMING_TOKENS


def test_recurring_texts_are_counted_once_and_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter()
    prompts = ["You are terse.", "You are a pirate.", "Answer in French."]
    expected = [counter.count(p) for p in prompts]
    assert [counter.count_recurring(p) for p in prompts] == expected
    encoded: list[str] = []
    count = counter.count

    def counting(text: str) -> int:
        encoded.append(text)
        return count(text)

    monkeypatch.setattr(counter, "count", counting)
    assert [counter.count_recurring(p) for p in reversed(prompts)] == expected[::-1]
    assert encoded == []  # none encoded again


def test_recurring_texts_are_bounded_by_their_characters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter(remembered_chars=30)
    encoded: list[str] = []
    count = counter.count

    def counting(text: str) -> int:
        encoded.append(text)
        return count(text)

    monkeypatch.setattr(counter, "count", counting)
    first, second, third = "a" * 12, "b" * 12, "c" * 12  # 36 characters: one must go
    too_long = "d" * 31
    for text in (first, second, third, too_long, too_long, third, second, first):
        assert counter.count_recurring(text) == count(text)
    # The first was the least recently used when the third came; the one over the whole
    # bound is never kept; the second and third stayed.
    assert encoded == [first, second, third, too_long, too_long, first]
