"""Chat messages reshaped for APIs with a top-level system prompt and strict turn-taking.

Anthropic's Messages API and Bedrock's Converse API take the system prompt apart from
the conversation, want user and assistant turns to alternate, and (Bedrock always) want
the conversation to open with a user turn. ``split_turns`` does that reshaping once,
purely, for both. A context trimmed to its last messages can open with an assistant
turn; a short placeholder user turn is put before it rather than dropping the reply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from providers.base import ChatMessage

TurnRole = Literal["user", "assistant"]
MERGE_SEPARATOR = "\n\n"
OPENING_PLACEHOLDER = "(continuing our conversation)"


@dataclass(frozen=True, slots=True)
class Turn:
    role: TurnRole
    content: str


@dataclass(frozen=True, slots=True)
class SplitTurns:
    system: str
    turns: tuple[Turn, ...]


def split_turns(messages: Iterable[ChatMessage]) -> SplitTurns:
    """System messages joined into one prompt; consecutive same-role turns merged."""
    system: list[str] = []
    turns: list[Turn] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
        elif turns and turns[-1].role == message.role:
            merged = turns[-1].content + MERGE_SEPARATOR + message.content
            turns[-1] = Turn(message.role, merged)
        else:
            turns.append(Turn(message.role, message.content))
    if turns and turns[0].role == "assistant":
        turns.insert(0, Turn("user", OPENING_PLACEHOLDER))
    return SplitTurns(system=MERGE_SEPARATOR.join(system), turns=tuple(turns))
