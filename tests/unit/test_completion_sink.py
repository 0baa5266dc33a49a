"""The OpenAI-compatible SSE sink: every chunk on the wire is a whole chat.completion.chunk
(served by a real aiohttp server, read back as bytes)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.frames import DeltaFrame, DoneFrame, ErrorFrame, ServerFrame, StartFrame
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
    await sink.end()
    assert sink.response is not None
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


Writes = list[tuple[str, bytes]]


def _spied(response: web.StreamResponse, writes: Writes) -> None:
    """Record what goes through the response's two writing methods (aiohttp's own)."""
    write, write_eof = response.write, response.write_eof

    async def spy_write(data: bytes) -> None:
        writes.append(("write", bytes(data)))
        await write(data)

    async def spy_write_eof(data: bytes = b"") -> None:
        writes.append(("write_eof", bytes(data)))
        await write_eof(data)

    response.write, response.write_eof = spy_write, spy_write_eof  # type: ignore[method-assign]


async def _served(frames: list[ServerFrame], writes: Writes) -> str:
    """The body a client reads when the sink is sent a start, then ``frames``, then the
    handler ends it (``("end", b"")`` marks in ``writes`` where the handler's end began)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        sink = CompletionSink(request, stream=True, include_usage=True)
        await sink.send(StartFrame("http", "conv-1", "openai", "gpt-x"))
        assert sink.response is not None
        _spied(sink.response, writes)
        for frame in frames:
            await sink.send(frame)
        writes.append(("end", b""))
        await sink.end()
        return sink.response

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        return (await (await client.post("/")).read()).decode()


DONE = DoneFrame("http", "conv-1", {"prompt_tokens": 3, "completion_tokens": 1,
                                    "total_tokens": 4}, 0.0, False, "length")


async def test_the_end_of_a_stream_is_one_write_that_ends_the_body() -> None:
    """Finish chunk, usage chunk, [DONE] and the chunked terminator: one write (four writes
    and an end before). ``done`` itself writes nothing: the service does not wait on it."""
    writes: Writes = []
    raw = await _served([DeltaFrame("http", "Hi"), DONE], writes)
    (first, delta), (marker, _), (second, last), *after = writes
    assert (first, marker, second) == ("write", "end", "write_eof")  # done wrote nothing
    assert delta.decode().count("data: ") == 2  # the role chunk went with the first delta
    assert last.endswith(b"data: [DONE]\n\n") and last.count(b"data: ") == 3
    assert b'"finish_reason":"length"' in last and b'"total_tokens":4' in last
    assert after == [("write_eof", b"")] * len(after)  # aiohttp's own, after ours: nothing
    assert raw.endswith(last.decode())


async def test_an_error_mid_stream_and_its_done_end_the_body_in_one_write() -> None:
    writes: Writes = []
    raw = await _served([DeltaFrame("http", "Hi"), ErrorFrame("http", "provider_error",
                                                               "upstream broke", {})], writes)
    (_, _), (marker, _), (kind, last), *_ = writes
    assert (marker, kind) == ("end", "write_eof") and last.count(b"data: ") == 2
    error, done = [e for e in last.decode().split("\n\n") if e]
    assert orjson.loads(error.removeprefix("data: "))["error"]["code"] == "provider_error"
    assert done == "data: [DONE]" and raw.endswith(last.decode())


async def test_nothing_follows_the_answers_end() -> None:
    """A frame after ``done`` (an error of something after the answer) is not written after
    ``[DONE]``, nor taken for the client's leaving."""
    writes: Writes = []
    raw = await _served([DeltaFrame("http", "Hi"), DONE,
                         ErrorFrame("http", "internal", "late", {}),
                         DeltaFrame("http", "late too")], writes)
    assert raw.endswith("data: [DONE]\n\n") and "late" not in raw
    assert [kind for kind, data in writes if data] == ["write", "write_eof"]
