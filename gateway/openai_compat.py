"""``POST /v1/chat/completions``: the OpenAI-compatible face of the same ChatService.

The request's last user message is the turn; earlier messages in the request are the
client's own history (used as context for a new conversation), and its system messages
are added after the brand's system prompt. ``X-Conversation-Id`` continues a stored
conversation and is returned on every response. ``stream: true`` answers with OpenAI SSE
chunks (plus a usage chunk with ``stream_options.include_usage``) and ``data: [DONE]``;
``stream: false`` with one ``chat.completion`` body. Errors before the first byte use the
HTTP status of DESIGN's table in OpenAI's error shape; after it, an SSE ``error`` event.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import GatewayError, InvalidRequest
from gateway.frames import ChatFrame, DeltaFrame, DoneFrame, ErrorFrame, ServerFrame, StartFrame
from gateway.http_api import principal_of
from gateway.http_errors import error_body, error_response
from gateway.runtime import RUNTIME_KEY
from gateway.sink import SinkClosed
from providers.base import ChatMessage, Role

CONVERSATION_HEADER = "X-Conversation-Id"
_ROLES = {"system", "user", "assistant", "developer"}
_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}
_DONE_EVENT = b"data: [DONE]\n\n"


class _ErrorSeen(GatewayError):
    """An error frame re-raised as the error it carried (status and code preserved)."""

    def __init__(self, frame: ErrorFrame, status: int) -> None:
        super().__init__(frame.message, **frame.extra)
        self.code, self.status = frame.code, status  # type: ignore[misc]


def parse_completion_request(body: Any, *, max_chars: int) -> tuple[ChatFrame, bool, bool]:
    """The chat frame, ``stream`` and ``include_usage`` from an OpenAI request body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array")
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    if parsed[-1].role != "user":
        raise InvalidRequest("the last message must have role 'user'")
    content = parsed[-1].content
    if len(content) > max_chars:
        raise InvalidRequest(f"the last message is longer than {max_chars} characters")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens <= 0):
        raise InvalidRequest("'max_tokens' must be a positive integer")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string")
    stream_options = body.get("stream_options") or {}
    frame = ChatFrame(id="http", content=content, max_tokens=max_tokens,
                      model=model or None, prior=tuple(parsed[:-1]))
    include_usage = bool(isinstance(stream_options, dict) and
                         stream_options.get("include_usage"))
    return frame, bool(body.get("stream")), include_usage


def _message(raw: Any, index: int) -> ChatMessage:
    if not isinstance(raw, dict) or raw.get("role") not in _ROLES:
        raise InvalidRequest(f"messages[{index}] must have a role of system, user or assistant")
    content = raw.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content
                          if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        raise InvalidRequest(f"messages[{index}].content must be a non-empty string")
    role: Role = "system" if raw["role"] == "developer" else raw["role"]
    return ChatMessage(role, content)


class CompletionSink:
    """Turns service frames into OpenAI SSE (streaming) or a collected body.

    A streamed body must be ended with :meth:`end` once the turn is over: ``done``'s (or an
    error's) closing events are held for it, to go out with the body's end in one write."""

    def __init__(self, request: web.Request, *, stream: bool, include_usage: bool) -> None:
        self._request = request
        self._stream = stream
        self._include_usage = include_usage
        self.response: web.StreamResponse | None = None
        self.start: StartFrame | None = None
        self.parts: list[str] = []
        self.done: DoneFrame | None = None
        self.error: ErrorFrame | None = None
        self.created = int(time.time())
        self._delta_head = self._delta_tail = b""  # a content delta's bytes around its text
        self._held = b""  # bytes that go out with the next write
        self._ended = False  # done or error came: the answer is whole, nothing follows it

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        assert self.start is not None
        return {"id": f"chatcmpl-{self.start.conversation_id}", "object":
                "chat.completion.chunk", "created": self.created, "model": self.start.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    @staticmethod
    def _event(payload: dict[str, Any] | str) -> bytes:
        data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        return b"data: " + data + b"\n\n"

    def _delta_event(self, text: str) -> bytes:
        """``data: <chunk>`` of one content delta: the chunk's bytes around the text are the
        same for the whole stream, so they are encoded once (what ``_chunk`` would give).
        Bytes, written by the caller: one coroutine fewer a delta."""
        if not self._delta_head:
            whole = orjson.dumps(self._chunk({"content": ""}, None))
            head, _, tail = whole.partition(b'"content":""')
            self._delta_head, self._delta_tail = b"data: " + head + b'"content":', tail + b"\n\n"
        return self._delta_head + orjson.dumps(text) + self._delta_tail

    async def end(self) -> None:
        """End a streamed body, with everything held back (``done``'s or an error's events,
        a role chunk no delta followed): one ``write_eof``. The handler's last word on it,
        after the turn (whose client may have gone away: then neither came)."""
        if self.response is not None:
            await self._send(b"", last=True)

    async def _send(self, data: bytes, *, last: bool = False) -> None:
        """One write: anything held back goes first, in the same write. The ``last`` one
        ends the body too (its events and the chunked terminator: one write)."""
        assert self.response is not None
        if self._held:
            data, self._held = self._held + data, b""
        try:
            if last:
                await self.response.write_eof(data)
            else:
                await self.response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            raise SinkClosed() from exc

    async def send(self, frame: ServerFrame) -> None:
        if self._ended:  # after done or an error: the client has its answer
            return
        match frame:
            case StartFrame():
                self.start = frame
                if self._stream:
                    await self._open()
                    # The role chunk goes out with what follows it (the first delta comes
                    # right after the start): one write, one packet, for the first token.
                    role = orjson.dumps(self._chunk({"role": "assistant", "content": ""}, None))
                    self._held = b"data: " + role + b"\n\n"
            case DeltaFrame(text=text):
                if self._stream:
                    await self._send(self._delta_event(text))
                else:
                    self.parts.append(text)
            case DoneFrame():
                self.done, self._ended = frame, True
                if self._stream:
                    self._finish_stream(frame)
            case ErrorFrame():
                self.error, self._ended = frame, True
                if self._stream and self.response is not None:
                    self._held += (self._event(error_body(_ErrorSeen(frame, 500)))
                                   + _DONE_EVENT)
            case _:
                pass

    async def _open(self) -> None:
        assert self.start is not None
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            CONVERSATION_HEADER: self.start.conversation_id})
        await response.prepare(self._request)
        self.response = response

    def _finish_stream(self, done: DoneFrame) -> None:
        """The finish chunk, the usage chunk (when asked for) and ``[DONE]``, held for
        :meth:`end`: with the end of the body, one write, one packet (they were four writes
        and an end). Held, not written: the service, which sends ``done``, does not wait
        on a client slow to read (``write_eof`` drains)."""
        events = self._event(self._chunk({}, _FINISH.get(done.finish_reason, "stop")))
        if self._include_usage:
            chunk = self._chunk({}, None)
            chunk["choices"], chunk["usage"] = [], done.usage
            events += self._event(chunk)
        self._held += events + _DONE_EVENT

    def body(self) -> dict[str, Any]:
        assert self.start is not None and self.done is not None
        return {"id": f"chatcmpl-{self.done.conversation_id}", "object": "chat.completion",
                "created": self.created, "model": self.start.model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": "".join(self.parts)},
                             "finish_reason": _FINISH.get(self.done.finish_reason, "stop")}],
                "usage": self.done.usage,
                "chatgate": {"cached": self.done.cached, "cost_usd": self.done.cost_usd,
                             "provider": self.start.provider, "timings_ms": self.done.timings_ms}}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME_KEY]
    principal = await principal_of(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("body is not valid JSON") from None
    frame, stream, include_usage = parse_completion_request(
        body, max_chars=runtime.config.limits.max_message_chars)
    conversation_id = request.headers.get(CONVERSATION_HEADER) or None
    if conversation_id is not None:
        frame = ChatFrame(id=frame.id, content=frame.content, conversation_id=conversation_id,
                          max_tokens=frame.max_tokens, model=frame.model,
                          prior=tuple(m for m in frame.prior if m.role == "system"))
    sink = CompletionSink(request, stream=stream, include_usage=include_usage)
    await runtime.service.chat(principal, frame, sink)
    if sink.response is not None:
        with contextlib.suppress(SinkClosed):  # the client left
            await sink.end()
        return sink.response
    headers = {CONVERSATION_HEADER: conversation_id} if conversation_id else {}
    if sink.error is not None:
        error = _ErrorSeen(sink.error, _status_of(sink.error.code))
        if "conversation_id" in sink.error.extra:
            headers[CONVERSATION_HEADER] = str(sink.error.extra["conversation_id"])
        return error_response(error, headers=headers)
    assert sink.done is not None
    headers[CONVERSATION_HEADER] = sink.done.conversation_id
    return web.json_response(sink.body(), headers=headers, dumps=lambda o: orjson.dumps(o)
                             .decode())


def _status_of(code: str) -> int:
    for cls in GatewayError.__subclasses__():
        if cls.code == code:
            return cls.status
    return 500
