"""A small WebSocket chat client for the tests (real aiohttp client over loopback)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

RECEIVE_TIMEOUT_S = 10.0


@dataclass
class ChatResult:
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [f["type"] for f in self.frames]

    @property
    def text(self) -> str:
        return "".join(f["text"] for f in self.frames if f["type"] == "delta")

    @property
    def last(self) -> dict[str, Any]:
        return self.frames[-1]


class ChatSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def receive(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=RECEIVE_TIMEOUT_S)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame: dict[str, Any] = orjson.loads(message.data)
        return frame

    async def chat(self, content: str, *, frame_id: str = "c1",
                   conversation_id: str | None = None, **extra: Any) -> ChatResult:
        await self.send({"type": "chat", "id": frame_id, "content": content,
                         "conversation_id": conversation_id, **extra})
        return await self.collect(frame_id)

    async def collect(self, frame_id: str) -> ChatResult:
        result = ChatResult()
        while True:
            frame = await self.receive()
            assert frame.get("id") == frame_id, frame
            result.frames.append(frame)
            if frame["type"] in ("done", "error"):
                return result
