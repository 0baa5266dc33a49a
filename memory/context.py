"""Context assembly: pure, tested alone.

Rule (DESIGN Part B): system prompt + the recent messages if they fit the plan's window
minus ``max_tokens``; otherwise the rolling summary + the last 5 messages (dropping the
oldest of those too if even they do not fit). The assembled prompt never exceeds the
window minus ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from providers.base import ChatMessage

TAIL_MESSAGES = 5


@dataclass(frozen=True, slots=True)
class AssembledContext:
    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    used_summary: bool
    history_included: int  # how many earlier messages made it in
    history_total: int


class ContextTooLarge(ValueError):
    """Even the system prompt and the new message do not fit the window."""


def assemble_context(
    *,
    system_prompt: str,
    summary: str,
    history: Sequence[ChatMessage],
    new_message: ChatMessage,
    window: int,
    max_tokens: int,
    count_messages: Callable[[Sequence[ChatMessage]], int],
) -> AssembledContext:
    budget = window - max_tokens
    head = (ChatMessage("system", system_prompt),) if system_prompt else ()

    def build(prefix: tuple[ChatMessage, ...], earlier: Sequence[ChatMessage]
              ) -> tuple[tuple[ChatMessage, ...], int]:
        messages = (*prefix, *earlier, new_message)
        return messages, count_messages(messages)

    messages, tokens = build(head, history)
    if tokens <= budget:
        return AssembledContext(messages, tokens, False, len(history), len(history))
    summary_head = head
    if summary:
        summary_head = (*head, ChatMessage("system", f"Summary of the earlier conversation: "
                                                     f"{summary}"))
    tail = list(history[-TAIL_MESSAGES:])
    while True:
        messages, tokens = build(summary_head, tail)
        if tokens <= budget:
            return AssembledContext(messages, tokens, summary_head != head, len(tail),
                                    len(history))
        if tail:
            tail.pop(0)
        elif summary_head != head:
            summary_head = head
        else:
            raise ContextTooLarge(f"the message needs {tokens} tokens; the window leaves "
                                  f"{budget} after max_tokens")
