"""Wire frames: client frames parsed once at the edge, server frames encoded type first."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import BudgetExceeded, InvalidRequest, RateLimited
from gateway.frames import (
    CancelFrame,
    ChatFrame,
    DeltaFrame,
    DoneFrame,
    ErrorFrame,
    FrameError,
    PingFrame,
    PongFrame,
    StartFrame,
    encode_frame,
    parse_client_frame,
)

MAX_CHARS = 100


def parse(data: Any) -> object:
    raw = data if isinstance(data, str | bytes) else orjson.dumps(data)
    return parse_client_frame(raw, max_message_chars=MAX_CHARS)


def parse_error(data: Any) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse(data)
    return info.value


def chat(**fields: Any) -> dict[str, Any]:
    return {"type": "chat", "id": "c1", "content": "Hi", **fields}


# --- valid client frames -----------------------------------------------------------------


def test_chat_with_every_field() -> None:
    frame = parse(chat(conversation_id="abc", max_tokens=256, model="gpt-4o-mini"))
    assert frame == ChatFrame(id="c1", content="Hi", conversation_id="abc", max_tokens=256,
                              model="gpt-4o-mini")


def test_chat_with_only_required_fields_defaults_the_rest() -> None:
    assert parse(chat()) == ChatFrame(id="c1", content="Hi")


def test_chat_with_null_conversation_id_starts_new() -> None:
    frame = parse(chat(conversation_id=None))
    assert isinstance(frame, ChatFrame)
    assert frame.conversation_id is None


def test_chat_from_bytes() -> None:
    frame = parse_client_frame(b'{"type":"chat","id":"c1","content":"h\xc3\xa9"}',
                               max_message_chars=MAX_CHARS)
    assert frame == ChatFrame(id="c1", content="hé")


def test_chat_content_at_the_limit_is_accepted() -> None:
    frame = parse(chat(content="x" * MAX_CHARS))
    assert isinstance(frame, ChatFrame)
    assert len(frame.content) == MAX_CHARS


def test_cancel() -> None:
    assert parse({"type": "cancel", "id": "c1"}) == CancelFrame(id="c1")


def test_ping() -> None:
    assert parse({"type": "ping"}) == PingFrame()


# --- invalid client frames ---------------------------------------------------------------


@pytest.mark.parametrize("raw", ["not json", "{", b"\xff\xfe", ""])
def test_non_json_is_a_frame_error_without_id(raw: str | bytes) -> None:
    error = parse_error(raw)
    assert error.frame_id is None
    assert isinstance(error, InvalidRequest)
    assert error.code == "invalid_request"


@pytest.mark.parametrize("raw", ["[1, 2]", '"chat"', "42", "null"])
def test_json_that_is_not_an_object_is_a_frame_error(raw: str) -> None:
    error = parse_error(raw)
    assert "JSON object" in error.message
    assert error.frame_id is None


def test_unknown_type_keeps_the_id() -> None:
    error = parse_error({"type": "chit", "id": "c7"})
    assert "unknown frame type" in error.message
    assert error.frame_id == "c7"


def test_missing_type_is_unknown() -> None:
    error = parse_error({"id": "c7", "content": "Hi"})
    assert "unknown frame type" in error.message
    assert error.frame_id == "c7"


@pytest.mark.parametrize("kind", ["chat", "cancel"])
@pytest.mark.parametrize("bad_id", [None, "", 7, ["c1"]])
def test_missing_or_empty_id_is_a_frame_error_without_id(kind: str, bad_id: Any) -> None:
    data: dict[str, Any] = {"type": kind, "content": "Hi"}
    if bad_id is not None:
        data["id"] = bad_id
    error = parse_error(data)
    assert "'id'" in error.message
    assert error.frame_id is None


def test_id_of_128_characters_is_accepted() -> None:
    assert parse({"type": "cancel", "id": "i" * 128}) == CancelFrame(id="i" * 128)


@pytest.mark.parametrize("kind", ["chat", "cancel"])
def test_id_too_long_is_a_frame_error(kind: str) -> None:
    error = parse_error({"type": kind, "id": "i" * 129, "content": "Hi"})
    assert "'id'" in error.message
    assert "128" in error.message


@pytest.mark.parametrize("content", ["", "   ", "\n\t ", None, 5, ["Hi"]])
def test_empty_or_non_string_content_is_a_frame_error_with_id(content: Any) -> None:
    data = chat(content=content)
    if content is None:
        del data["content"]
    error = parse_error(data)
    assert "'content'" in error.message
    assert error.frame_id == "c1"


def test_content_over_the_maximum_is_a_frame_error_with_id() -> None:
    error = parse_error(chat(content="x" * (MAX_CHARS + 1)))
    assert "'content'" in error.message
    assert str(MAX_CHARS) in error.message
    assert error.frame_id == "c1"


@pytest.mark.parametrize("conversation_id", [5, "", ["a"], {"id": "a"}, True])
def test_conversation_id_of_wrong_type_is_a_frame_error(conversation_id: Any) -> None:
    error = parse_error(chat(conversation_id=conversation_id))
    assert "'conversation_id'" in error.message
    assert error.frame_id == "c1"


@pytest.mark.parametrize("max_tokens", [0, -1, True, False, "5", 1.5, 5.0, [5]])
def test_max_tokens_that_is_not_a_positive_integer_is_a_frame_error(max_tokens: Any) -> None:
    error = parse_error(chat(max_tokens=max_tokens))
    assert "'max_tokens'" in error.message
    assert error.frame_id == "c1"


@pytest.mark.parametrize("model", ["", 4, ["gpt"]])
def test_empty_or_non_string_model_is_a_frame_error(model: Any) -> None:
    error = parse_error(chat(model=model))
    assert "'model'" in error.message
    assert error.frame_id == "c1"


# --- server frames -----------------------------------------------------------------------


def decoded(frame: Any) -> tuple[list[str], dict[str, Any]]:
    raw = encode_frame(frame)
    assert isinstance(raw, bytes)
    body = orjson.loads(raw)
    return list(body), body


def test_encode_start() -> None:
    keys, body = decoded(StartFrame(id="c1", conversation_id="conv", provider="openai",
                                    model="gpt-4o-mini", cached=False))
    assert keys[0] == "type"
    assert body == {"type": "start", "id": "c1", "conversation_id": "conv",
                    "provider": "openai", "model": "gpt-4o-mini", "cached": False}


def test_encode_delta() -> None:
    keys, body = decoded(DeltaFrame(id="c1", text="Hel\"lo"))
    assert keys[0] == "type"
    assert body == {"type": "delta", "id": "c1", "text": "Hel\"lo"}


def test_encode_done() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    keys, body = decoded(DoneFrame(id="c1", conversation_id="conv", usage=usage,
                                   cost_usd=0.0001, cached=True, finish_reason="length",
                                   timings_ms={"first_token": 12.5}))
    assert keys[0] == "type"
    assert body == {"type": "done", "id": "c1", "conversation_id": "conv", "usage": usage,
                    "cost_usd": 0.0001, "cached": True, "finish_reason": "length",
                    "timings_ms": {"first_token": 12.5}}


def test_encode_pong() -> None:
    assert orjson.loads(encode_frame(PongFrame())) == {"type": "pong"}


def test_encode_error_without_extras() -> None:
    keys, body = decoded(ErrorFrame(id=None, code="invalid_request", message="bad"))
    assert keys[0] == "type"
    assert body == {"type": "error", "id": None, "code": "invalid_request", "message": "bad"}


def test_encode_error_flattens_retry_after_ms() -> None:
    frame = ErrorFrame.from_error("c1", RateLimited("slow down", retry_after_ms=1500))
    keys, body = decoded(frame)
    assert keys[0] == "type"
    assert body == {"type": "error", "id": "c1", "code": "rate_limited",
                    "message": "slow down", "retry_after_ms": 1500}


def test_encode_error_flattens_scope() -> None:
    frame = ErrorFrame.from_error("c1", BudgetExceeded("over", scope="user_day"))
    _, body = decoded(frame)
    assert body["code"] == "budget_exceeded"
    assert body["scope"] == "user_day"
    assert "extra" not in body


def test_frame_error_becomes_an_error_frame_with_its_id() -> None:
    error = parse_error(chat(max_tokens=0))
    _, body = decoded(ErrorFrame.from_error(error.frame_id, error))
    assert body["id"] == "c1"
    assert body["code"] == "invalid_request"
