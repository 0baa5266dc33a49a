"""OpenAI Chat Completions on the wire: ``POST /v1/chat/completions``.

``stream: true`` answers SSE ``chat.completion.chunk`` objects (a role chunk, one chunk per
delta, a finish chunk, a usage chunk when ``stream_options.include_usage``, then
``data: [DONE]``); ``stream: false`` answers one ``chat.completion`` JSON body. Errors
have OpenAI's ``{"error": {...}}`` shape. Point the SDK at ``fake.url + "/v1"``.
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

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied",
                404: "not_found", 429: "rate_limit_exceeded"}
_STREAM_ERRORS: dict[ErrorKind, str] = {"overloaded": "server_error", "internal": "server_error",
                                        "rate_limited": "rate_limit_exceeded",
                                        "bad_request": "invalid_request_error"}


def _model(call: RecordedRequest) -> str:
    return str((call.body or {}).get("model", "gpt-fake"))


def _chunk(call: RecordedRequest, delta: dict[str, Any], finish: str | None = None,
           ) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
            "model": _model(call),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


class OpenAIWire:
    content_type = "text/event-stream"

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", handler)]

    def is_streaming(self, call: RecordedRequest) -> bool:
        return bool((call.body or {}).get("stream"))

    def opening(self, call: RecordedRequest, reply: Reply) -> bytes:
        return sse(_chunk(call, {"role": "assistant", "content": ""}))

    def delta(self, call: RecordedRequest, index: int, text: str) -> bytes:
        return sse(_chunk(call, {"content": text}))

    def finishing(self, call: RecordedRequest, reply: Reply) -> bytes:
        return sse(_chunk(call, {}, finish=reply.finish))

    def trailer(self, call: RecordedRequest, reply: Reply) -> bytes:
        out = b""
        if ((call.body or {}).get("stream_options") or {}).get("include_usage"):
            usage_chunk = {**_chunk(call, {}), "choices": [], "usage": _usage(reply)}
            out += sse(usage_chunk)
        return out + sse("[DONE]")

    def stream_error(self, call: RecordedRequest, kind: ErrorKind) -> bytes:
        return sse({"error": {"message": f"fake {kind}", "type": _STREAM_ERRORS[kind],
                              "code": None}})

    def error_response(self, answer: Status) -> web.Response:
        kind = answer.error_code or _ERROR_TYPES.get(answer.code, "server_error")
        headers = {} if answer.retry_after is None else {"retry-after": f"{answer.retry_after}"}
        return web.json_response({"error": {"message": f"fake {answer.code}", "type": kind,
                                            "code": kind, "param": None}},
                                 status=answer.code, headers=headers)

    def complete_response(self, call: RecordedRequest, reply: Reply) -> web.Response:
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
            "model": _model(call),
            "choices": [{"index": 0, "finish_reason": reply.finish,
                         "message": {"role": "assistant", "content": reply.text}}],
            "usage": _usage(reply),
        })


def openai_fake() -> FakeUpstream:
    return FakeUpstream(OpenAIWire())
