"""One chat turn, over chatgate's WebSocket frames or OpenAI HTTP streaming, timed.

The load generator (``bench/load.py``) runs these turns in its two shapes of load. Per
turn, on the client's monotonic clock: TTFT (send → first non-empty content delta), the
full-turn latency (send → end of stream) and any error (HTTP status, ``error`` frame,
early close, time-out). Prompts carry a unique prefix unless a fixed one is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import orjson

Protocol = Literal["http", "ws"]
TURN_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where turns go and how to authenticate them."""

    name: str
    protocol: Protocol
    url: str  # http(s)://…/v1/chat/completions or ws://…/v1/ws
    model: str = "bench-model"
    headers: dict[str, str] = field(default_factory=dict)
    tokens: tuple[str, ...] = ()  # bearer tokens, one per client (cycled); empty: none
    max_tokens: int = 512

    def token(self, client: int) -> str | None:
        return self.tokens[client % len(self.tokens)] if self.tokens else None


@dataclass(slots=True)
class TurnResult:
    started: float  # perf_counter at send
    ended: float
    ok: bool
    ttft: float | None = None  # seconds
    deltas: int = 0
    cached: bool = False
    error: str | None = None
    conversation_id: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started



class Prompts:
    """Unique prompts: ``[run-client-seq]`` prefix, so no cache can answer them."""

    def __init__(self, fixed: str | None = None) -> None:
        self._run = uuid.uuid4().hex[:8]
        self._seq = itertools.count()
        self._fixed = fixed

    def next(self, client: int) -> str:
        if self._fixed is not None:
            return self._fixed
        return (f"[{self._run}-{client}-{next(self._seq)}] Tell me three facts about the "
                f"weather in a coastal town, briefly.")


# --- HTTP (OpenAI streaming) -------------------------------------------------------------


def http_session(limit: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, keepalive_timeout=60,
                                     force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(
        total=None, sock_connect=10))


async def http_turn(session: aiohttp.ClientSession, target: Target, client: int,
                    prompt: str, *, conversation_id: str | None = None) -> TurnResult:
    body = orjson.dumps({"model": target.model, "stream": True,
                         "stream_options": {"include_usage": True},
                         "max_tokens": target.max_tokens,
                         "messages": [{"role": "user", "content": prompt}]})
    headers = {"Content-Type": "application/json", **target.headers}
    token = target.token(client)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if conversation_id:
        headers["X-Conversation-Id"] = conversation_id
    started = time.perf_counter()
    result = TurnResult(started=started, ended=started, ok=False)
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            async with session.post(target.url, data=body, headers=headers) as response:
                if response.status != 200:
                    text = (await response.read())[:200].decode(errors="replace")
                    result.error = f"http {response.status}: {text}"
                    return result
                result.conversation_id = response.headers.get("X-Conversation-Id")
                await _read_sse(response, result)
    except TimeoutError:
        result.error = "timeout"
    except (aiohttp.ClientError, ConnectionError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {str(exc)[:120]}"
    finally:
        if result.ended == started:  # not set at [DONE]
            result.ended = time.perf_counter()
    return result


# A non-empty content delta, as OpenAI-style servers write it (with or without spaces).
_CONTENT = re.compile(rb'"content"\s*:\s*"(?!")')


async def _read_sse(response: aiohttp.ClientResponse, result: TurnResult) -> None:
    """Reads the SSE stream in whole lines, counting content deltas by a byte scan (the
    client must stay cheap: it shares a core with the upstream); a line is parsed as JSON
    only when it carries an error."""
    buffer = b""
    done = False
    async for data in response.content.iter_any():
        buffer += data
        cut = buffer.rfind(b"\n")
        if cut < 0:
            continue
        block, buffer = buffer[:cut + 1], buffer[cut + 1:]
        found = len(_CONTENT.findall(block))
        if found:
            if result.ttft is None:
                result.ttft = time.perf_counter() - result.started
            result.deltas += found
        if b'"error"' in block:
            for line in block.splitlines():
                if line.startswith(b"data:") and b'"error"' in line:
                    chunk = orjson.loads(line[5:].strip())
                    if isinstance(chunk, dict) and "error" in chunk:
                        result.error = f"stream error: {str(chunk['error'])[:160]}"
                        return
        if b"data: [DONE]" in block:
            done = True
            result.ended = time.perf_counter()
            break
    if done:  # read the rest (the chunked terminator) as SDKs do, so the connection is
        # reused; a client that closes right after [DONE] makes servers write to a closed
        # socket, and reconnects every turn
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await response.read()
    result.ok = done and result.deltas > 0
    if not result.ok:
        result.error = "stream ended without [DONE]" if not done else "no deltas"


# --- WebSocket (chatgate's frames) -------------------------------------------------------


class _PendingTurn:
    __slots__ = ("future", "result")

    def __init__(self, result: TurnResult) -> None:
        self.result = result
        self.future: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()

    def on_frame(self, frame: dict[str, object]) -> None:
        kind = frame.get("type")
        if kind == "delta":
            if self.result.ttft is None:
                self.result.ttft = time.perf_counter() - self.result.started
            self.result.deltas += 1
        elif kind == "done":
            self.result.cached = bool(frame.get("cached"))
            conversation = frame.get("conversation_id")
            self.result.conversation_id = conversation if isinstance(conversation, str) else None
            self.finish(ok=self.result.deltas > 0, error=None if self.result.deltas else
                        "done without deltas")
        elif kind == "error":
            self.finish(ok=False, error=f"{frame.get('code')}: {str(frame.get('message'))[:100]}")

    def finish(self, *, ok: bool, error: str | None) -> None:
        if not self.future.done():
            self.result.ended = time.perf_counter()
            self.result.ok, self.result.error = ok, error
            self.future.set_result(self.result)


class WsClient:
    """One WebSocket; several turns may be in flight on it (frames carry their id)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: dict[str, _PendingTurn] = {}
        self._ids = itertools.count()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, target: Target,
                      client: int) -> WsClient:
        token = target.token(client)
        params = {"token": token} if token else None
        ws = await session.ws_connect(target.url, params=params, headers=target.headers,
                                      autoping=True, max_msg_size=0, heartbeat=None)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = orjson.loads(message.data)
                turn = self.pending.get(frame.get("id"))
                if turn is not None:
                    turn.on_frame(frame)
        except (aiohttp.ClientError, ConnectionError, ValueError):
            pass
        finally:
            for turn in list(self.pending.values()):
                turn.finish(ok=False, error=f"socket closed ({self.ws.close_code})")

    async def turn(self, prompt: str, *, conversation_id: str | None = None,
                   max_tokens: int = 512) -> TurnResult:
        chat_id = f"c{next(self._ids)}"
        frame = orjson.dumps({"type": "chat", "id": chat_id, "conversation_id": conversation_id,
                              "content": prompt, "max_tokens": max_tokens}).decode()
        started = time.perf_counter()
        pending = _PendingTurn(TurnResult(started=started, ended=started, ok=False))
        self.pending[chat_id] = pending
        try:
            await self.ws.send_str(frame)
            async with asyncio.timeout(TURN_TIMEOUT_S):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            pending.finish(ok=False, error="timeout")
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            pending.finish(ok=False, error=f"{type(exc).__name__}: {str(exc)[:100]}")
        finally:
            self.pending.pop(chat_id, None)
        return pending.result

    @property
    def closed(self) -> bool:
        return self.ws.closed or self._reader.done()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
