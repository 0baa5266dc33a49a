"""The floor: the least a Python gateway can do, on the same stack as chatgate (aiohttp).

HTTP  ``POST /v1/chat/completions``: forwards the request body to the upstream and copies
      the response back byte for byte (status, content type, the SSE stream as it arrives).
      No auth, no parsing, no accounting.
WS    ``/v1/ws``: speaks chatgate's frame protocol (chat -> start / delta... / done, ping ->
      pong) with no auth, limits, memory or budgets: each ``chat`` frame becomes one
      streaming upstream request whose SSE deltas are relayed as ``delta`` frames.

It is the reference for what chatgate's own work costs: chatgate minus this proxy is
what authentication, budgets, memory, routing and the frame protocol add. It runs on the
same event loop as ``chatgate serve`` (uvloop where installed).

    python bench/bare_proxy.py --port 9100 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding",
              "upgrade", "authorization"}


def create_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=None)) as s:
            app[SESSION] = s
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    headers["Authorization"] = "Bearer bench"
    url = request.app[UPSTREAM] + "/chat/completions"
    async with request.app[SESSION].post(url, data=body, headers=headers) as upstream:
        response = web.StreamResponse(status=upstream.status, headers={
            "Content-Type": upstream.headers.get("Content-Type", "application/json")})
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


def _frame(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = orjson.loads(message.data)
            kind = frame.get("type")
            if kind == "ping":
                await ws.send_str('{"type":"pong"}')
            elif kind == "chat":
                task = asyncio.create_task(_relay(request.app, ws, frame))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def _relay(app: web.Application, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    chat_id = frame.get("id")
    conversation_id = frame.get("conversation_id") or "bare"
    body = {"model": frame.get("model") or "bench-model",
            "messages": [{"role": "user", "content": frame.get("content", "")}],
            "max_tokens": frame.get("max_tokens") or 512, "stream": True,
            "stream_options": {"include_usage": True}}
    usage: dict[str, int] = {}
    finish = "stop"
    try:
        await ws.send_str(_frame({"type": "start", "id": chat_id,
                                  "conversation_id": conversation_id, "provider": "openai",
                                  "model": body["model"], "cached": False}))
        async with app[SESSION].post(app[UPSTREAM] + "/chat/completions",
                                     data=orjson.dumps(body),
                                     headers={"Authorization": "Bearer bench",
                                              "Content-Type": "application/json"}) as upstream:
            if upstream.status != 200:
                raise ConnectionError(f"upstream answered {upstream.status}")
            async for line in upstream.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                chunk = orjson.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        await ws.send_str(_frame({"type": "delta", "id": chat_id, "text": text}))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        await ws.send_str(_frame({"type": "done", "id": chat_id,
                                  "conversation_id": conversation_id, "usage": usage,
                                  "cost_usd": 0.0, "cached": False, "finish_reason": finish,
                                  "timings_ms": {}}))
    except (aiohttp.ClientError, ConnectionError) as exc:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(_frame({"type": "error", "id": chat_id, "code": "provider_error",
                                      "message": str(exc)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--upstream", default="http://127.0.0.1:9000/v1",
                        help="the upstream's OpenAI base URL")
    args = parser.parse_args()
    loop = None
    try:  # the same event loop as `chatgate serve` (uvloop where installed): a fair floor
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(create_app(args.upstream), host=args.host, port=args.port, print=None,
                access_log=None, backlog=4096, loop=loop)


if __name__ == "__main__":
    main()
