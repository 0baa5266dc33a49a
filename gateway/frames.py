"""WebSocket frames: typed, parsed once at the edge, encoded with orjson.

Client → gateway: ``chat``, ``cancel``, ``ping``. Gateway → client: ``start``, ``delta``,
``done``, ``error``, ``pong``. Parsing never raises anything but :class:`FrameError`, which
carries the chat ``id`` when the frame had a usable one so the error can be attributed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway.errors import GatewayError, InvalidRequest
from providers.base import ChatMessage


@dataclass(frozen=True, slots=True)
class ChatFrame:
    id: str
    content: str
    conversation_id: str | None = None
    max_tokens: int | None = None
    model: str | None = None
    # Client-supplied context (OpenAI-style requests): earlier messages, system ones included.
    prior: tuple[ChatMessage, ...] = ()
    type: Literal["chat"] = "chat"


@dataclass(frozen=True, slots=True)
class CancelFrame:
    id: str
    type: Literal["cancel"] = "cancel"


@dataclass(frozen=True, slots=True)
class PingFrame:
    type: Literal["ping"] = "ping"


ClientFrame = ChatFrame | CancelFrame | PingFrame


class FrameError(InvalidRequest):
    def __init__(self, message: str, *, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


def _frame_id(data: dict[str, Any]) -> str | None:
    value = data.get("id")
    return value if isinstance(value, str) and value else None


def parse_client_frame(raw: str | bytes, *, max_message_chars: int) -> ClientFrame:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("frame must be a JSON object")
    kind = data.get("type")
    frame_id = _frame_id(data)
    if kind == "ping":
        return PingFrame()
    if kind not in ("chat", "cancel"):
        raise FrameError(f"unknown frame type {kind!r}: expected chat, cancel or ping",
                         frame_id=frame_id)
    if frame_id is None:
        raise FrameError("'id' must be a non-empty string")
    if len(frame_id) > 128:
        raise FrameError("'id' must be at most 128 characters")
    if kind == "cancel":
        return CancelFrame(id=frame_id)
    return _parse_chat(data, frame_id, max_message_chars)


def _parse_chat(data: dict[str, Any], frame_id: str, max_message_chars: int) -> ChatFrame:
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        raise FrameError("'content' must be a non-empty string", frame_id=frame_id)
    if len(content) > max_message_chars:
        raise FrameError(f"'content' is longer than {max_message_chars} characters",
                         frame_id=frame_id)
    conversation_id = data.get("conversation_id")
    if conversation_id is not None and (not isinstance(conversation_id, str)
                                        or not conversation_id):
        raise FrameError("'conversation_id' must be null or a non-empty string",
                         frame_id=frame_id)
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens <= 0):
        raise FrameError("'max_tokens' must be a positive integer", frame_id=frame_id)
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise FrameError("'model' must be a non-empty string", frame_id=frame_id)
    return ChatFrame(id=frame_id, content=content, conversation_id=conversation_id,
                     max_tokens=max_tokens, model=model)


# --- gateway → client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartFrame:
    id: str
    conversation_id: str
    provider: str
    model: str
    cached: bool = False
    type: Literal["start"] = "start"


@dataclass(frozen=True, slots=True)
class DeltaFrame:
    id: str
    text: str
    type: Literal["delta"] = "delta"


@dataclass(frozen=True, slots=True)
class DoneFrame:
    id: str
    conversation_id: str
    usage: dict[str, int]
    cost_usd: float
    cached: bool
    finish_reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    type: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    id: str | None
    code: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    type: Literal["error"] = "error"

    @classmethod
    def from_error(cls, frame_id: str | None, error: GatewayError) -> ErrorFrame:
        return cls(id=frame_id, code=error.code, message=error.message, extra=error.extra)


@dataclass(frozen=True, slots=True)
class PongFrame:
    type: Literal["pong"] = "pong"


ServerFrame = StartFrame | DeltaFrame | DoneFrame | ErrorFrame | PongFrame


def encode_frame(frame: ServerFrame) -> bytes:
    """JSON bytes of a server frame (``type`` first; error extras flattened)."""
    if isinstance(frame, DeltaFrame):  # the frame of every streamed piece, tested first
        return orjson.dumps({"type": "delta", "id": frame.id, "text": frame.text})
    match frame:
        case ErrorFrame():
            return orjson.dumps({"type": "error", "id": frame.id, "code": frame.code,
                                 "message": frame.message, **frame.extra})
        case PongFrame():
            return b'{"type":"pong"}'
        case StartFrame() | DoneFrame():
            body = {"type": frame.type}
            body.update({k: getattr(frame, k) for k in frame.__dataclass_fields__ if k != "type"})
            return orjson.dumps(body)
