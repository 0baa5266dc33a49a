"""The HTTP resources: conversations, usage, admin usage and audit, tenant isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from tests.e2e.conftest import ConnectFn
from tests.gateway_harness import make_config, running_gateway, runtime_of, token


async def _get(server: TestServer, path: str, jwt: str, method: str = "GET"
               ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, server.make_url(path), headers={"Authorization": f"Bearer {jwt}"}) as r:
        return r.status, await r.json()


async def _flush(server: TestServer) -> None:
    """Write-behind is eventual: drain the outbox so warm history has every turn."""
    persister = runtime_of(server).persister
    if persister is not None:
        await persister.drain()


async def _converse(connect: ConnectFn, user: str, turns: int = 2) -> str:
    async with connect(user=user) as sock:
        conversation_id = None
        for i in range(turns):
            done = (await sock.chat(f"{user} says {i}", frame_id=f"f{i}",
                                    conversation_id=conversation_id)).last
            conversation_id = done["conversation_id"]
    assert conversation_id is not None
    return str(conversation_id)


async def test_conversations_list_get_and_delete_every_tier(gateway: TestServer,
                                                           connect: ConnectFn) -> None:
    older = await _converse(connect, "alice")
    newer = await _converse(connect, "alice", turns=1)
    await _flush(gateway)
    status, listing = await _get(gateway, "/v1/conversations", token(user="alice"))
    assert status == 200
    assert [c["conversation_id"] for c in listing["data"]] == [newer, older]
    assert listing["data"][1]["title"] == "alice says 0"
    assert "user_id" not in listing["data"][0]
    status, conversation = await _get(gateway, f"/v1/conversations/{older}", token(user="alice"))
    assert status == 200
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"] * 2
    status, _ = await _get(gateway, f"/v1/conversations/{older}", token(user="alice"), "DELETE")
    assert status == 200
    runtime = runtime_of(gateway)
    assert await runtime.hot.load("growain", older) is None
    assert await runtime.history.get_conversation("growain", "alice", older) is None
    status, body = await _get(gateway, f"/v1/conversations/{older}", token(user="alice"))
    assert (status, body["error"]["code"]) == (404, "not_found")
    async with connect(user="alice") as sock:
        gone = await sock.chat("continue?", conversation_id=older)
    assert gone.last["code"] == "not_found"


async def test_another_users_conversation_is_not_found(gateway: TestServer,
                                                       connect: ConnectFn) -> None:
    owned = await _converse(connect, "alice")
    await _flush(gateway)
    for method in ("GET", "DELETE"):
        status, body = await _get(gateway, f"/v1/conversations/{owned}", token(user="mallory"),
                                  method)
        assert (status, body["error"]["code"]) == (404, "not_found")
    other_brand = token(user="alice", brand="mindagain")
    status, _ = await _get(gateway, f"/v1/conversations/{owned}", other_brand)
    assert status == 404
    status, listing = await _get(gateway, "/v1/conversations", token(user="mallory"))
    assert (status, listing["data"]) == (200, [])
    status, _ = await _get(gateway, f"/v1/conversations/{owned}", token(user="alice"))
    assert status == 200  # still there after the failed attempts


async def test_usage_reports_against_plan_limits(gateway: TestServer,
                                                 connect: ConnectFn) -> None:
    async with connect(user="alice") as sock:
        done = (await sock.chat("hello")).last
    status, usage = await _get(gateway, "/v1/usage", token(user="alice"))
    assert status == 200
    assert usage["plan"] == "free"
    assert usage["user"]["day"] == {"used": done["usage"]["total_tokens"], "reserved": 0,
                                    "limit": 5000, "period": usage["user"]["day"]["period"]}
    assert usage["user"]["month"]["limit"] == 100000
    assert usage["brand"]["month"]["limit"] == 50000000
    assert usage["brand"]["month"]["cost_usd"] > 0
    status, enterprise = await _get(gateway, "/v1/usage", token(user="carl", plan="enterprise"))
    assert status == 200
    assert enterprise["user"]["day"]["limit"] == -1


async def test_admin_usage_and_audit_need_admin_of_that_brand(
        tmp_path: Path, redis_url: str, connect: ConnectFn, gateway: TestServer) -> None:
    await _converse(connect, "alice")
    await _flush(gateway)
    admin = token(user="boss", roles=["admin"])
    status, usage = await _get(gateway, "/admin/brands/growain/usage", admin)
    assert status == 200 and usage["month"]["used"] > 0 and usage["month"]["reserved"] == 0
    status, audit = await _get(gateway, "/admin/brands/growain/audit?since=0&limit=1", admin)
    assert status == 200 and len(audit["data"]) == 1 and audit["next_cursor"]
    entry = audit["data"][0]
    assert entry["user_id"] == "alice" and entry["outcome"] == "stop"
    assert "content" not in str(entry) and "alice says" not in str(entry)
    status, page2 = await _get(
        gateway, f"/admin/brands/growain/audit?since=0&limit=1&cursor={audit['next_cursor']}",
        admin)
    assert status == 200 and page2["data"][0]["turn_id"] != entry["turn_id"]
    assert (await _get(gateway, "/admin/brands/growain/usage", token(user="alice")))[0] == 403
    other_admin = token(user="boss", brand="mindagain", roles=["admin"])
    assert (await _get(gateway, "/admin/brands/growain/usage", other_admin))[0] == 403
    assert (await _get(gateway, "/admin/brands/growain/audit", other_admin))[0] == 403


async def test_bad_requests_are_typed(gateway: TestServer) -> None:
    status, body = await _get(gateway, "/v1/conversations?limit=0", token())
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    status, body = await _get(gateway, "/v1/conversations?cursor=garbage", token())
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    status, body = await _get(gateway, "/v1/usage", "nope")
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_embedded_backend_serves_a_turn_and_lists_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, "memory://e2e-embedded")
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        from tests.e2e.wsclient import ChatSocket

        done = (await ChatSocket(ws).chat("on the embedded backend")).last
        assert done["type"] == "done"
        status, listing = await _get(server, "/v1/conversations", token())
    assert status == 200
    # Embedded: the turn was written to the local warm store before done.
    assert [c["conversation_id"] for c in listing["data"]] == [done["conversation_id"]]


def test_every_http_route_answers_errors_and_the_socket_route_keeps_no_wrapper(
        tmp_path, redis_url: str) -> None:
    """Typed errors become JSON on every HTTP route (``guarded``); the WebSocket route is
    bare, so an idle socket keeps no middleware or wrapper frame alive."""
    from gateway.app import create_app

    app = create_app(make_config(tmp_path, redis_url))
    assert not app.middlewares
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path == "/v1/ws" or path.startswith("/static"):
            assert not getattr(route.handler, "guarded", False), path
        else:
            assert getattr(route.handler, "guarded", False), f"{route.method} {path}"
