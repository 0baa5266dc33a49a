"""Anthropic Messages on the wire: ``POST /v1/messages`` answering SSE.

A stream is ``message_start`` (input tokens), ``content_block_start``, ``ping``, one
``content_block_delta`` per delta, ``content_block_stop``, ``message_delta`` (stop reason,
output tokens), ``message_stop``. In-stream failures are ``error`` events; HTTP errors
have the ``{"type": "error", "error": {"type": …}}`` body and a ``retry-after`` header
when scripted. Point the SDK at ``fake.url`` (it appends ``/v1/messages``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.upstream import (
    ErrorKind,
    FakeUpstream,
    RecordedRequest,
    Reply,
    Status,
    sse,
)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_STREAM_ERRORS: dict[ErrorKind, str] = {"overloaded": "overloaded_error", "internal": "api_error",
                                        "rate_limited": "rate_limit_error",
                                        "bad_request": "invalid_request_error"}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def _message(call: RecordedRequest, reply: Reply, *, content: list[Any],
             stop_reason: str | None, output_tokens: int) -> dict[str, Any]:
    return {"id": "msg_fake", "type": "message", "role": "assistant",
            "model": str((call.body or {}).get("model", "claude-fake")), "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": output_tokens}}


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


class AnthropicWire:
    content_type = "text/event-stream; charset=utf-8"

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [web.post("/v1/messages", handler)]

    def is_streaming(self, call: RecordedRequest) -> bool:
        return bool((call.body or {}).get("stream"))

    def opening(self, call: RecordedRequest, reply: Reply) -> bytes:
        message = _message(call, reply, content=[], stop_reason=None, output_tokens=1)
        return (_event("message_start", message=message)
                + _event("content_block_start", index=0,
                         content_block={"type": "text", "text": ""})
                + _event("ping"))

    def delta(self, call: RecordedRequest, index: int, text: str) -> bytes:
        return _event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})

    def finishing(self, call: RecordedRequest, reply: Reply) -> bytes:
        return (_event("content_block_stop", index=0)
                + _event("message_delta",
                         delta={"stop_reason": _STOP_REASONS[reply.finish],
                                "stop_sequence": None},
                         usage={"output_tokens": reply.completion_tokens}))

    def trailer(self, call: RecordedRequest, reply: Reply) -> bytes:
        return _event("message_stop")

    def stream_error(self, call: RecordedRequest, kind: ErrorKind) -> bytes:
        return _event("error", error={"type": _STREAM_ERRORS[kind], "message": f"fake {kind}"})

    def error_response(self, answer: Status) -> web.Response:
        kind = answer.error_code or _ERROR_TYPES.get(answer.code, "api_error")
        headers = {"request-id": "req_fake"}
        if answer.retry_after is not None:
            headers["retry-after"] = f"{answer.retry_after}"
        return web.json_response(
            {"type": "error", "error": {"type": kind, "message": f"fake {answer.code}"}},
            status=answer.code, headers=headers)

    def complete_response(self, call: RecordedRequest, reply: Reply) -> web.Response:
        return web.json_response(_message(
            call, reply, content=[{"type": "text", "text": reply.text}],
            stop_reason=_STOP_REASONS[reply.finish], output_tokens=reply.completion_tokens))


def anthropic_fake() -> FakeUpstream:
    return FakeUpstream(AnthropicWire())
