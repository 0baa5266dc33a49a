"""The asynchronous hand-off of turns, against a wire-level fake of Lambda's Invoke API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deploy.dispatch import DispatchFailed, LambdaDispatcher, unwrap_turn, wrap_turn
from deploy.settings import LambdaSettings
from tests.deploy.conftest import serving


@pytest.fixture
async def fake_lambda(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestServer,
                                                                              list[object]]]:
    calls: list[object] = []

    async def invoke(request: web.Request) -> web.Response:
        calls.append((request.match_info["name"], request.headers["X-Amz-Invocation-Type"],
                      orjson.loads(await request.read())))
        if request.match_info["name"].startswith("denied"):  # not retried by botocore
            return web.Response(status=403, body=b'{"message": "no"}',
                                headers={"x-amzn-ErrorType": "AccessDeniedException"})
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    async with serving(app) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", str(server.make_url("")))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        yield server, calls


def test_wrapping_round_trips() -> None:
    event = {"requestContext": {"routeKey": "$default"}, "body": "{}"}
    assert unwrap_turn(wrap_turn(event)) == event
    assert unwrap_turn(event) is None


async def test_turn_is_invoked_as_an_event(fake_lambda: tuple[TestServer, list[object]]) -> None:
    _, calls = fake_lambda
    dispatcher = LambdaDispatcher("chatgate-chat:live", LambdaSettings())
    try:
        await dispatcher.dispatch(wrap_turn({"body": "x"}))
    finally:
        await dispatcher.aclose()
    assert calls == [("chatgate-chat:live", "Event", {"chatgate_turn": {"body": "x"}})]


async def test_a_failed_invoke_is_dispatch_failed(
        fake_lambda: tuple[TestServer, list[object]]) -> None:
    settings = LambdaSettings()
    dispatcher = LambdaDispatcher("denied-chat:live", settings)
    try:
        with pytest.raises(DispatchFailed):
            await dispatcher.dispatch(wrap_turn({"body": "x"}))
    finally:
        await dispatcher.aclose()
