"""Reshaping chat messages for system-apart, strictly alternating APIs."""

from __future__ import annotations

from providers.base import ChatMessage
from providers.turns import OPENING_PLACEHOLDER, Turn, split_turns


def test_systems_join_and_same_role_turns_merge() -> None:
    split = split_turns([
        ChatMessage("system", "Be kind."), ChatMessage("system", "Summary: earlier talk."),
        ChatMessage("user", "a"), ChatMessage("user", "b"), ChatMessage("assistant", "c"),
        ChatMessage("user", "d"),
    ])
    assert split.system == "Be kind.\n\nSummary: earlier talk."
    assert split.turns == (Turn("user", "a\n\nb"), Turn("assistant", "c"), Turn("user", "d"))


def test_a_conversation_opening_with_the_assistant_gets_a_user_turn_first() -> None:
    split = split_turns([ChatMessage("system", "S"), ChatMessage("assistant", "earlier reply"),
                         ChatMessage("user", "next")])
    assert split.turns == (Turn("user", OPENING_PLACEHOLDER), Turn("assistant", "earlier reply"),
                           Turn("user", "next"))


def test_no_system_is_an_empty_system() -> None:
    assert split_turns([ChatMessage("user", "hi")]).system == ""
