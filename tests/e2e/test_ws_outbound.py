"""The WebSocket outbound path end to end: order under backpressure, a vanished client."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from gateway.app import SOCKETS
from tests.e2e.wsclient import ChatSocket
from tests.gateway_harness import make_config, running_gateway, runtime_of, token

CHATS = {f"c{i}": f"question number {i}, tell me a story" for i in range(12)}


def small_receive_buffer(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_stalled_client_holds_its_chats_and_gets_every_frame_in_order(
        tmp_path: Any, redis_url: str) -> None:
    config = make_config(tmp_path, redis_url, gateway={"outbound_queue_frames": 4},
                         mock={"answer_tokens": 1500}, brands={"growain": {"cache": "off"}})
    jwt = token(plan="enterprise")
    async with running_gateway(config) as server, aiohttp.ClientSession() as http:
        url = server.make_url("/v1/ws")
        async with http.ws_connect(url, params={"token": jwt}) as ws:
            sock = ChatSocket(ws)  # one chat at a time: the reference answers
            alone = {i: (await sock.chat(q, frame_id=i, max_tokens=4000)).text
                     for i, q in CHATS.items()}
        ledger = runtime_of(server).ledger
        used_before = (await ledger.usage("growain", "alice")).user_day.used
        connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        async with aiohttp.ClientSession(connector=connector) as stalled, \
                stalled.ws_connect(url, params={"token": jwt}) as ws:
            # Small kernel buffers both ways, so that the server's transport pauses soon.
            server_ws = next(w for w in server.app[SOCKETS] if not w.closed)
            server_ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                          4096)
            assert ws._conn is not None and ws._conn.transport is not None
            client_transport = ws._conn.transport
            client_transport.pause_reading()
            sock = ChatSocket(ws)
            for i, q in CHATS.items():
                await sock.send({"type": "chat", "id": i, "content": q, "max_tokens": 4000})
            await asyncio.sleep(0.5)
            # The client reads nothing: its chats wait for room instead of buffering it all.
            assert (await ledger.usage("growain", "alice")).user_day.reserved > 0
            client_transport.resume_reading()
            frames: dict[str, list[dict[str, Any]]] = {i: [] for i in CHATS}
            while any(not f or f[-1]["type"] != "done" for f in frames.values()):
                frame = await sock.receive()
                frames[frame["id"]].append(frame)
    for i, chat in frames.items():
        kinds = [f["type"] for f in chat]
        assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
        assert "".join(f["text"] for f in chat if f["type"] == "delta") == alone[i]
        assert len(alone[i].split()) > 1500
    usage = await ledger.usage("growain", "alice")
    assert usage.user_day.reserved == 0 and usage.user_day.used == 2 * used_before


async def test_a_client_that_vanishes_mid_stream_releases_its_turns(
        tmp_path: Any, redis_url: str) -> None:
    config = make_config(tmp_path, redis_url,
                         mock={"token_delay_ms": 5, "answer_tokens": 400})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/v1/ws"), params={"token": token()})
        sock = ChatSocket(ws)
        for i in ("a", "b"):
            await sock.send({"type": "chat", "id": i, "content": "a long story",
                             "max_tokens": 1024})
        kinds = [(await sock.receive())["type"] for _ in range(6)]
        assert "delta" in kinds
        assert ws._conn is not None and ws._conn.transport is not None
        ws._conn.transport.abort()  # no close frame: the server finds out by itself
        ledger = runtime_of(server).ledger
        for _ in range(200):
            usage = await ledger.usage("growain", "alice")
            if usage.user_day.reserved == 0:
                break
            await asyncio.sleep(0.025)
        assert usage.user_day.reserved == 0 and usage.user_day.used > 0
        await ws.close()
