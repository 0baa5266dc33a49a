"""Bedrock Converse on the wire: ``POST /model/{modelId}/converse-stream``.

Answers ``application/vnd.amazon.eventstream``: binary frames (prelude with total and
header lengths and its CRC, string headers, JSON payload, message CRC), one per event
(``messageStart``, ``contentBlockDelta``…, ``contentBlockStop``, ``messageStop``,
``metadata``). In-stream failures are exception frames (``:message-type exception``,
``:exception-type throttlingException``…); HTTP errors carry ``x-amzn-ErrorType``.
Point aioboto3 at ``fake.url`` with ``endpoint_url`` and dummy credentials.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.eventstream import event_frame, exception_frame
from tests.fakes.upstream import ErrorKind, FakeUpstream, RecordedRequest, Reply, Status

_ERROR_CODES = {400: "ValidationException", 401: "UnrecognizedClientException",
                403: "AccessDeniedException", 404: "ResourceNotFoundException",
                408: "ModelTimeoutException", 424: "ModelErrorException",
                429: "ThrottlingException", 500: "InternalServerException",
                503: "ServiceUnavailableException"}
_STREAM_ERRORS: dict[ErrorKind, str] = {
    "overloaded": "serviceUnavailableException", "internal": "internalServerException",
    "rate_limited": "throttlingException", "bad_request": "validationException"}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


class BedrockWire:
    content_type = "application/vnd.amazon.eventstream"

    def routes(self, handler: Any) -> list[web.RouteDef]:
        return [web.post("/model/{modelId}/converse-stream", handler)]

    def is_streaming(self, call: RecordedRequest) -> bool:
        return True

    def opening(self, call: RecordedRequest, reply: Reply) -> bytes:
        return event_frame("messageStart", {"role": "assistant"})

    def delta(self, call: RecordedRequest, index: int, text: str) -> bytes:
        return event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})

    def finishing(self, call: RecordedRequest, reply: Reply) -> bytes:
        return (event_frame("contentBlockStop", {"contentBlockIndex": 0})
                + event_frame("messageStop", {"stopReason": _STOP_REASONS[reply.finish]}))

    def trailer(self, call: RecordedRequest, reply: Reply) -> bytes:
        usage = {"inputTokens": reply.prompt_tokens, "outputTokens": reply.completion_tokens,
                 "totalTokens": reply.prompt_tokens + reply.completion_tokens}
        return event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})

    def stream_error(self, call: RecordedRequest, kind: ErrorKind) -> bytes:
        return exception_frame(_STREAM_ERRORS[kind], f"fake {kind}")

    def error_response(self, answer: Status) -> web.Response:
        code = answer.error_code or _ERROR_CODES.get(answer.code, "InternalServerException")
        headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                   "x-amzn-RequestId": "fake-request"}
        return web.json_response({"message": f"fake {answer.code}"}, status=answer.code,
                                 headers=headers)

    def complete_response(self, call: RecordedRequest, reply: Reply) -> web.Response:
        raise AssertionError("converse-stream always streams")


def bedrock_fake() -> FakeUpstream:
    return FakeUpstream(BedrockWire())
