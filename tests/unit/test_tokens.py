"""Token counting: tiktoken encodings installed from the shipped copies, no network."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken.load
import tiktoken.registry

from memory import tokens
from memory.tokens import (
    ENTRY_OVERHEAD_BYTES,
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


def _spy(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts ``counter`` encodes from now on."""
    encoded: list[str] = []
    count = counter.count

    def counting(text: str) -> int:
        encoded.append(text)
        return count(text)

    monkeypatch.setattr(counter, "count", counting)
    return encoded


def test_recurring_texts_are_counted_once_and_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter()
    prompts = ["You are terse.", "You are a pirate."]
    history = ["Hi there", "Hello! How can I help?"]
    expected = [counter.count(t) for t in (*prompts, *history)]
    assert [*map(counter.count_prompt, prompts), *map(counter.count_history, history)] == (
        expected)
    encoded = _spy(counter, monkeypatch)
    assert [*map(counter.count_prompt, prompts), *map(counter.count_history, history)] == (
        expected)
    assert encoded == []  # none encoded again


def test_remembered_counts_are_bounded_by_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry is its text's size plus a fixed overhead: a bound of three entries of 12
    characters keeps three, a fourth pushes out the least recently used, and a text over
    the whole bound is counted without being kept."""
    entry = sys.getsizeof("a" * 12) + ENTRY_OVERHEAD_BYTES
    counter = TokenCounter(history_bytes=3 * entry)
    encoded = _spy(counter, monkeypatch)
    first, second, third, fourth = ("a" * 12, "b" * 12, "c" * 12, "d" * 12)
    huge = "e" * (3 * entry)
    for text in (first, second, third, first, fourth, huge, huge, first, third, second):
        assert counter.count_history(text) == len(counter._enc.encode_ordinary(text))
    # fourth pushed out second (first was used again before it); huge is never kept.
    assert encoded == [first, second, third, fourth, huge, huge, second]


def test_a_flow_of_history_never_pushes_out_the_prompts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter(prompts_bytes=4096, history_bytes=4096)
    counter.count_prompt("You are the brand's assistant.")
    for i in range(1000):  # far more history than its cache holds
        counter.count_history(f"message {i} of a long conversation")
    encoded = _spy(counter, monkeypatch)
    counter.count_prompt("You are the brand's assistant.")
    assert encoded == []
