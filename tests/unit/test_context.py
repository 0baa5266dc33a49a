"""Context assembly: everything that fits, else summary + the last 5, never over budget."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from memory.context import TAIL_MESSAGES, AssembledContext, ContextTooLarge, assemble_context
from providers.base import ChatMessage

SYSTEM = "You are helpful."  # 3 words: 6 tokens with the per-message overhead
NEW = ChatMessage("user", "what now")  # 5 tokens


def count(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.split()) + 3 for m in messages)


def msg(index: int, words: int = 4) -> ChatMessage:
    """``words`` words: ``words + 3`` tokens under ``count``."""
    content = " ".join([f"m{index}"] * words)
    return ChatMessage("user" if index % 2 == 0 else "assistant", content)


def assemble(history: Sequence[ChatMessage], *, summary: str = "", window: int,
             max_tokens: int = 10, system_prompt: str = SYSTEM) -> AssembledContext:
    return assemble_context(system_prompt=system_prompt, summary=summary, history=history,
                            new_message=NEW, window=window, max_tokens=max_tokens,
                            count_messages=count)


def test_everything_fits_includes_all_history() -> None:
    history = [msg(i) for i in range(8)]  # 8 * 7 = 56 tokens
    result = assemble(history, summary="old stuff", window=1000)
    assert result.messages == (ChatMessage("system", SYSTEM), *history, NEW)
    assert result.prompt_tokens == count(result.messages)
    assert not result.used_summary
    assert (result.history_included, result.history_total) == (8, 8)


def test_exactly_at_the_budget_still_fits() -> None:
    history = [msg(i) for i in range(8)]
    full = count([ChatMessage("system", SYSTEM), *history, NEW])
    result = assemble(history, window=full + 10, max_tokens=10)
    assert result.history_included == 8
    assert result.prompt_tokens == full


def test_no_system_prompt_means_no_system_message() -> None:
    result = assemble([msg(0)], window=1000, system_prompt="")
    assert result.messages == (msg(0), NEW)


def test_too_long_uses_summary_and_last_five() -> None:
    history = [msg(i) for i in range(20)]  # 140 tokens
    result = assemble(history, summary="they talked about pricing", window=80, max_tokens=10)
    system, summary, *tail, new = result.messages
    assert system == ChatMessage("system", SYSTEM)
    assert summary.role == "system"
    assert "they talked about pricing" in summary.content
    assert tail == history[-TAIL_MESSAGES:]
    assert new == NEW
    assert result.used_summary
    assert (result.history_included, result.history_total) == (5, 20)
    assert result.prompt_tokens <= 70


def test_too_long_without_summary_uses_last_five() -> None:
    history = [msg(i) for i in range(20)]
    result = assemble(history, window=80, max_tokens=10)
    assert result.messages == (ChatMessage("system", SYSTEM), *history[-5:], NEW)
    assert not result.used_summary
    assert result.history_included == 5


def test_drops_the_oldest_of_the_last_five_when_they_do_not_fit() -> None:
    history = [msg(i) for i in range(20)]
    # system 6 + new 5 + summary ("Summary of the earlier conversation: a b", 7 + 3) = 21;
    # a budget of 45 leaves room for 3 messages of 7 tokens, not 4.
    result = assemble(history, summary="a b", window=55, max_tokens=10)
    assert result.messages[2:-1] == tuple(history[-3:])
    assert result.history_included == 3
    assert result.used_summary


def test_summary_that_does_not_fit_is_dropped_and_not_reported_as_used() -> None:
    history = [msg(i, words=50) for i in range(3)]
    huge_summary = "word " * 100
    result = assemble(history, summary=huge_summary, window=40, max_tokens=10)
    assert result.messages == (ChatMessage("system", SYSTEM), NEW)
    assert not any("Summary" in m.content for m in result.messages)
    assert result.used_summary is False


def test_context_too_large_when_system_and_new_do_not_fit() -> None:
    # system 6 + new 5 = 11 > 20 - 10
    with pytest.raises(ContextTooLarge):
        assemble([msg(0)], summary="s", window=20, max_tokens=10)


def test_context_too_large_when_max_tokens_exceeds_window() -> None:
    with pytest.raises(ContextTooLarge):
        assemble([], window=100, max_tokens=200)


def test_random_histories_never_exceed_the_budget() -> None:
    rng = random.Random(20240601)
    for case in range(500):
        history = [ChatMessage(rng.choice(("user", "assistant")),
                               " ".join("w" * rng.randint(1, 6)
                                        for _ in range(rng.randint(1, 40))))
                   for _ in range(rng.randint(0, 30))]
        summary = " ".join("s" for _ in range(rng.randint(0, 60))) if rng.random() < 0.7 else ""
        system_prompt = "sys " * rng.randint(0, 20)
        window = rng.randint(10, 600)
        max_tokens = rng.randint(1, 200)
        head = [ChatMessage("system", system_prompt)] if system_prompt else []
        try:
            result = assemble_context(system_prompt=system_prompt, summary=summary,
                                      history=history, new_message=NEW, window=window,
                                      max_tokens=max_tokens, count_messages=count)
        except ContextTooLarge:
            assert count([*head, NEW]) > window - max_tokens, case
            continue
        budget = window - max_tokens
        assert result.prompt_tokens == count(result.messages), case
        assert result.prompt_tokens <= budget, case
        assert result.messages[-1] == NEW, case
        assert list(result.messages[:len(head)]) == head, case
        assert result.history_total == len(history), case
        included = [m for m in result.messages[len(head):-1]
                    if not m.content.startswith("Summary of the earlier conversation")]
        assert len(included) == result.history_included, case
        if included:
            assert included == history[-len(included):], case  # a suffix, in order
        if count([*head, *history, NEW]) <= budget:
            assert result.history_included == len(history), case
            assert not result.used_summary, case
        else:
            assert result.history_included <= TAIL_MESSAGES, case
