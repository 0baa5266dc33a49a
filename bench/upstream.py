"""A mock OpenAI-compatible upstream for the benchmarks: its own process, aiohttp.

``POST /v1/chat/completions`` answers ``stream: true`` with Server-Sent Events exactly as
OpenAI shapes them (a role chunk, one chunk per token, a finish chunk, a usage chunk with
``choices: []`` when ``stream_options.include_usage``, then ``data: [DONE]``) and
``stream: false`` with one ``chat.completion`` body. ``POST /v1/messages`` answers an
Anthropic Messages request (always streamed) with the events Anthropic sends, in their
order (``message_start`` with the input tokens, ``content_block_start``, ``ping``, one
``content_block_delta`` per token, ``content_block_stop``, ``message_delta`` with the stop
reason and output tokens, ``message_stop``). ``POST /model/{modelId}/converse-stream``
answers Bedrock's ConverseStream in AWS event-stream frames (``messageStart``, one
``contentBlockDelta`` per token, ``contentBlockStop``, ``messageStop``, ``metadata`` with
the usage; encoded by ``tests/fakes/eventstream.py``, standard library only). How it
answers is a *profile*:

    tokens      content deltas per answer
    ttft_ms     delay before the first content delta (headers and the role chunk go at once)
    delay_ms    delay between content deltas (scheduled on absolute deadlines, so the
                pace holds under load instead of drifting by the event loop's lag)

Profiles can be changed while it runs (``POST /bench/profile`` with a JSON body of those
keys), so every gateway under test keeps pointing at the same upstream process.
``GET /bench/stats`` counts requests; ``GET /healthz`` answers ok.

    python bench/upstream.py --port 9000 --profile chat
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fakes.eventstream import event_frame  # from the repository's root

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


@dataclass(frozen=True, slots=True)
class Profile:
    tokens: int = 16
    ttft_ms: float = 0.0
    delay_ms: float = 0.0


PROFILES = {
    "instant": Profile(tokens=16, ttft_ms=0.0, delay_ms=0.0),  # overhead: no waiting
    "chat": Profile(tokens=64, ttft_ms=0.0, delay_ms=20.0),  # load: a streamed answer
    "chat20": Profile(tokens=20, ttft_ms=0.0, delay_ms=20.0),  # the 200-session figure
}


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class Answers:
    """Pre-encoded SSE chunks per (model, profile): the hot loop only writes bytes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, Profile], tuple[bytes, list[bytes], bytes]] = {}

    def chunks(self, model: str, profile: Profile) -> tuple[bytes, list[bytes], bytes]:
        key = (model, profile)
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = (
                _sse(self._chunk(model, {"role": "assistant", "content": ""}, None)),
                [_sse(self._chunk(model, {"content": f" {WORDS[i % len(WORDS)]}"}, None))
                 for i in range(profile.tokens)],
                _sse(self._chunk(model, {}, "stop")),
            )
        return self._cache[key]

    @staticmethod
    def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]}


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class AnthropicAnswers:
    """Pre-encoded Anthropic stream events per (model, profile)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, Profile], tuple[bytes, list[bytes]]] = {}

    def chunks(self, model: str, profile: Profile) -> tuple[bytes, list[bytes]]:
        """The opening (``message_start`` to ``ping``, input tokens to fill in as
        ``{input}``) and one ``content_block_delta`` per token."""
        key = (model, profile)
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            message = {"id": "msg_bench", "type": "message", "role": "assistant",
                       "content": [], "model": model, "stop_reason": None,
                       "stop_sequence": None,
                       "usage": {"input_tokens": 999999, "output_tokens": 1}}
            opening = (_event("message_start", {"type": "message_start", "message": message})
                       + _event("content_block_start", {
                           "type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}})
                       + _event("ping", {"type": "ping"}))
            deltas = [_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": f" {WORDS[i % len(WORDS)]}"}})
                for i in range(profile.tokens)]
            self._cache[key] = opening, deltas
        return self._cache[key]

    @staticmethod
    def closing(output_tokens: int) -> bytes:
        return (_event("content_block_stop", {"type": "content_block_stop", "index": 0})
                + _event("message_delta", {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens}})
                + _event("message_stop", {"type": "message_stop"}))


class BedrockAnswers:
    """Pre-encoded ConverseStream delta frames per profile (they do not name the model)."""

    def __init__(self) -> None:
        self._cache: dict[Profile, list[bytes]] = {}

    def deltas(self, profile: Profile) -> list[bytes]:
        if profile not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[profile] = [event_frame("contentBlockDelta", {
                "contentBlockIndex": 0, "delta": {"text": f" {WORDS[i % len(WORDS)]}"}})
                for i in range(profile.tokens)]
        return self._cache[profile]

    @staticmethod
    def closing(input_tokens: int, output_tokens: int) -> bytes:
        usage = {"inputTokens": input_tokens, "outputTokens": output_tokens,
                 "totalTokens": input_tokens + output_tokens}
        return (event_frame("contentBlockStop", {"contentBlockIndex": 0})
                + event_frame("messageStop", {"stopReason": "end_turn"})
                + event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))


def prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap estimate (4 characters a token) of the prompt: the usage chunk reports it."""
    chars = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return max(1, chars // 4)


class Upstream:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.answers = Answers()
        self.anthropic = AnthropicAnswers()
        self.bedrock = BedrockAnswers()
        self.requests = 0
        self.streams_open = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/model/{model}/converse-stream", self.converse_stream)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/bench/profile", self.set_profile)
        app.router.add_get("/bench/profile", self.get_profile)
        app.router.add_get("/bench/stats", self.stats)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = json.loads(await request.read())
        model = str(body.get("model") or "bench-model")
        profile = self.profile
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < profile.tokens:
            profile = replace(profile, tokens=max_tokens)
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": profile.tokens,
                 "total_tokens": prompt_tokens(body) + profile.tokens}
        if not body.get("stream"):
            return await self._whole(model, profile, usage)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, model, profile, usage, include_usage)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API, streamed (its system prompt counted with the rest)."""
        self.requests += 1
        body = json.loads(await request.read())
        model = str(body.get("model") or "bench-model")
        profile = self.profile
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < profile.tokens:
            profile = replace(profile, tokens=max_tokens)
        system = body.get("system")
        prompt = prompt_tokens(body) + (len(system) // 4 if isinstance(system, str) else 0)
        opening, deltas = self.anthropic.chunks(model, profile)
        opening = opening.replace(b"999999", str(prompt).encode(), 1)
        return await self._send_stream(request, opening, deltas, profile,
                                       self.anthropic.closing(profile.tokens))

    async def converse_stream(self, request: web.Request) -> web.StreamResponse:
        """Bedrock's ConverseStream (text content blocks; the system blocks counted too)."""
        self.requests += 1
        body = json.loads(await request.read())
        profile = self.profile
        max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < profile.tokens:
            profile = replace(profile, tokens=max_tokens)
        chars = sum(len(block.get("text", "")) for message in body.get("messages") or []
                    for block in message.get("content") or [])
        chars += sum(len(block.get("text", "")) for block in body.get("system") or [])
        return await self._send_stream(
            request, event_frame("messageStart", {"role": "assistant"}),
            self.bedrock.deltas(profile), profile,
            self.bedrock.closing(max(1, chars // 4), profile.tokens),
            content_type="application/vnd.amazon.eventstream")

    async def _whole(self, model: str, profile: Profile, usage: dict[str, int]) -> web.Response:
        await asyncio.sleep((profile.ttft_ms + profile.delay_ms * max(0, profile.tokens - 1))
                            / 1000)
        text = "".join(f" {WORDS[i % len(WORDS)]}" for i in range(profile.tokens))
        return web.json_response({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
            "model": model, "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]})

    async def _stream(self, request: web.Request, model: str, profile: Profile,
                      usage: dict[str, int], include_usage: bool) -> web.StreamResponse:
        role, tokens, finish = self.answers.chunks(model, profile)
        tail = finish
        if include_usage:
            tail += _sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                          "created": 0, "model": model, "choices": [], "usage": usage})
        return await self._send_stream(request, role, tokens, profile,
                                       tail + b"data: [DONE]\n\n")

    async def _send_stream(self, request: web.Request, opening: bytes, tokens: list[bytes],
                           profile: Profile, closing: bytes,
                           content_type: str = "text/event-stream") -> web.StreamResponse:
        """The opening at once, each token's chunk on the profile's pace, the closing."""
        response = web.StreamResponse(headers={"Content-Type": content_type,
                                               "Cache-Control": "no-cache"})
        self.streams_open += 1
        try:
            await response.prepare(request)
            await response.write(opening)
            loop = asyncio.get_running_loop()
            start = loop.time() + profile.ttft_ms / 1000
            step = profile.delay_ms / 1000
            for i, chunk in enumerate(tokens):
                wait = start + i * step - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await response.write(chunk)
            await response.write(closing)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away: nothing more to send
        finally:
            self.streams_open -= 1
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]})

    async def set_profile(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "name" in data:
            self.profile = PROFILES[data["name"]]
        else:
            self.profile = Profile(tokens=int(data.get("tokens", self.profile.tokens)),
                                   ttft_ms=float(data.get("ttft_ms", self.profile.ttft_ms)),
                                   delay_ms=float(data.get("delay_ms", self.profile.delay_ms)))
        return web.json_response(asdict(self.profile))

    async def get_profile(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.profile))

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "streams_open": self.streams_open})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="instant")
    parser.add_argument("--tokens", type=int, help="override the profile's tokens")
    parser.add_argument("--ttft-ms", type=float, help="override the profile's ttft_ms")
    parser.add_argument("--delay-ms", type=float, help="override the profile's delay_ms")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    profile = replace(profile,
                      tokens=args.tokens if args.tokens is not None else profile.tokens,
                      ttft_ms=args.ttft_ms if args.ttft_ms is not None else profile.ttft_ms,
                      delay_ms=args.delay_ms if args.delay_ms is not None else profile.delay_ms)
    loop = None
    try:  # the upstream shares a core with the load generator: keep it cheap when we can
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(Upstream(profile).app(), host=args.host, port=args.port, print=None,
                access_log=None, backlog=4096, loop=loop)


if __name__ == "__main__":
    main()
