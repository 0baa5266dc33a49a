"""Test data for the memory tiers: turns and an adjustable clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from memory.records import StoredMessage, TurnRecord

START = 1_700_000_000.0
_turn_ids = itertools.count()


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_turn(conversation_id: str = "conv-1", *, user_id: str = "alice", brand: str = "growain",
              at: float = START, text: str = "Hello there", answer: str = "Hi! How can I help?",
              ttl_days: int = 7, archive: bool = False, turn_id: str | None = None) -> TurnRecord:
    return TurnRecord(
        turn_id=turn_id or f"turn-{next(_turn_ids)}",
        conversation_id=conversation_id, user_id=user_id, brand=brand, plan="free",
        user_message=StoredMessage(role="user", content=text, created_at=at, tokens=3),
        assistant_message=StoredMessage(role="assistant", content=answer, created_at=at + 0.5,
                                        tokens=5),
        provider="mock", model="mock-1", prompt_tokens=10, completion_tokens=5,
        cost_usd=0.0001, outcome="stop", cached=False, created_at=at,
        history_ttl_days=ttl_days, archive=archive, timings_ms={"first_token": 12.5},
    )
