"""Stored records: what a finished turn leaves behind, encoded with orjson.

A :class:`TurnRecord` is the unit of write-behind persistence: it travels through the
Redis outbox stream to warm history (messages, conversation metadata, audit entry) and,
for plans with ``archive = true``, to the cold archive. It carries no secrets; its
``audit`` view carries no message content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: Role
    content: str
    created_at: float  # epoch seconds, UTC
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "created_at": self.created_at,
                "tokens": self.tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredMessage:
        return cls(role=data["role"], content=data["content"],
                   created_at=float(data["created_at"]), tokens=int(data.get("tokens", 0)))


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One finished turn (a user message and the assistant's answer) plus its metadata."""

    turn_id: str  # unique per turn (the gateway's request id); writes are idempotent on it
    conversation_id: str
    user_id: str
    brand: str
    plan: str
    user_message: StoredMessage
    assistant_message: StoredMessage
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    outcome: str  # "stop" | "length" | "cancelled" | an error code
    cached: bool
    created_at: float
    history_ttl_days: int
    archive: bool
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def expires_at(self) -> int:
        """Epoch seconds after which warm history ignores (and DynamoDB deletes) it."""
        return int(self.created_at + self.history_ttl_days * 86400)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson encodes (nested) dataclasses natively: no asdict copy

    @classmethod
    def from_json(cls, raw: bytes | str) -> TurnRecord:
        data = orjson.loads(raw)
        data["user_message"] = StoredMessage.from_dict(data["user_message"])
        data["assistant_message"] = StoredMessage.from_dict(data["assistant_message"])
        return cls(**data)

    def audit(self) -> dict[str, Any]:
        """The audit entry: everything but message content."""
        return {
            "turn_id": self.turn_id, "conversation_id": self.conversation_id,
            "user_id": self.user_id, "brand": self.brand, "plan": self.plan,
            "provider": self.provider, "model": self.model,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd, "outcome": self.outcome, "cached": self.cached,
            "created_at": self.created_at, "timings_ms": self.timings_ms,
        }
