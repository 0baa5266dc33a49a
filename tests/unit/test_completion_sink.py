"""The OpenAI-compatible SSE sink: every chunk on the wire is a whole chat.completion.chunk
(served by a real aiohttp server, read back as bytes)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.frames import DeltaFrame, DoneFrame, StartFrame
from gateway.openai_compat import CompletionSink

TEXTS = ["Hello", ' say "hi"\n', " é😀 </script> \\ \u2028", ""]


async def _stream(request: web.Request) -> web.StreamResponse:
    """A start, then (by the query) the deltas of TEXTS and a done with usage, or not."""
    sink = CompletionSink(request, stream=True, include_usage=True)
    await sink.send(StartFrame("http", "conv-1", "openai", "gpt-x"))
    for text in TEXTS if "deltas" in request.query else ():
        await sink.send(DeltaFrame("http", text))
    if "done" in request.query:
        await sink.send(DoneFrame("http", "conv-1", {"prompt_tokens": 3, "completion_tokens": 4,
                                                     "total_tokens": 7}, 0.0, False, "stop"))
    await sink.flush()
    assert sink.response is not None
    await sink.response.write_eof()
    return sink.response


async def _events(path: str) -> list[str]:
    """The SSE ``data`` fields a client reads from ``_stream`` at ``path``."""
    app = web.Application()
    app.router.add_post("/", _stream)
    async with TestClient(TestServer(app)) as client:
        raw = (await (await client.post(path)).read()).decode()
    return [e.removeprefix("data: ") for e in raw.split("\n\n") if e]


async def test_each_content_delta_is_a_whole_chunk_of_the_stream() -> None:
    events = await _events("/?deltas&done")
    assert events[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = [orjson.loads(e) for e in events[:-1]]
    role, deltas = chunks[0], chunks[1:1 + len(TEXTS)]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for chunk, text in zip(deltas, TEXTS, strict=True):
        assert chunk == {"id": "chatcmpl-conv-1", "object": "chat.completion.chunk",
                         "created": role["created"], "model": "gpt-x",
                         "choices": [{"index": 0, "delta": {"content": text},
                                      "finish_reason": None}]}
    finish, usage = chunks[1 + len(TEXTS):]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7


async def test_the_role_chunk_is_never_lost_when_no_delta_follows() -> None:
    with_done, alone = await _events("/?done"), await _events("/")
    assert orjson.loads(with_done[0])["choices"][0]["delta"] == {"role": "assistant",
                                                                 "content": ""}
    assert orjson.loads(with_done[1])["choices"][0]["finish_reason"] == "stop"
    assert orjson.loads(with_done[2])["usage"]["total_tokens"] == 7
    assert with_done[3:] == ["[DONE]"]
    [only] = alone
    assert orjson.loads(only)["choices"][0]["delta"]["role"] == "assistant"
