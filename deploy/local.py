"""A local API Gateway WebSocket emulator running the Lambda handlers in-process.

``chatgate serve --lambda`` serves this app: the same URL as the aiohttp transport
(``/v1/ws``), but every socket event becomes a Lambda event handled by
:class:`deploy.lambda_gateway.LambdaGateway`, exactly as API Gateway would deliver it:

- the upgrade becomes ``$connect`` (headers, ``queryStringParameters``); a non-2xx answer
  refuses the upgrade with that status, before any frame;
- each text frame becomes a ``$default`` invocation (a binary one, base64 with
  ``isBase64Encoded``), all running concurrently, like API Gateway's;
- the close becomes ``$disconnect``; invocations still running go on, and find the
  connection gone when they next post.

The Management API is served by the same server, ``POST|GET|DELETE
/{stage}/@connections/{id}``, so the handlers' aioboto3 client talks to it over real
HTTP: a closed or unknown connection is a 410 with a ``GoneException`` body; an unsigned
request is a 403, as on AWS (the signature itself is not checked).

``async_turns`` hands each chat turn to an "asynchronous invocation" (a task on any
instance), as the template does on AWS to outlive API Gateway's 29-second integration
timeout (:mod:`deploy.dispatch`).

``instances`` > 1 spreads invocations round-robin over that many independent handler
instances (each with its own runtime), as API Gateway spreads them over Lambda execution
environments: anything a handler kept in memory instead of Redis shows up as a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deploy.dispatch import TaskDispatcher
from deploy.events import (
    ConnectionInfo,
    Event,
    Response,
    connect_event,
    disconnect_event,
    message_event,
    new_connection_id,
)
from deploy.lambda_gateway import LambdaGateway, open_lambda_gateway
from deploy.settings import LambdaSettings
from gateway.config import Config
from gateway.observability import Metrics

log = structlog.get_logger("chatgate.apigw")
Invoke = Callable[[Event], Awaitable[Response]]
# API Gateway's limit for one WebSocket message (frames are 32 KB, a message 128 KB).
MAX_MESSAGE_BYTES = 128 * 1024
DRAIN_TIMEOUT_S = 10.0


@dataclass(slots=True)
class LocalConnection:
    ws: web.WebSocketResponse
    info: ConnectionInfo
    last_active_ms: int
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ApiGatewayEmulator:
    """Connections by id, the invocations in flight, and the Management API."""

    def __init__(self, invoke: Invoke, *, stage: str) -> None:
        self._invoke = invoke
        self.stage = stage
        self._connections: dict[str, LocalConnection] = {}
        self._invocations: set[asyncio.Task[Response]] = set()

    # --- client side --------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        now_ms = int(time.time() * 1000)
        info = ConnectionInfo(connection_id=new_connection_id(), domain_name=request.host,
                              stage=self.stage, source_ip=request.remote or "",
                              user_agent=request.headers.get("User-Agent", ""),
                              connected_at_ms=now_ms)
        answer = await self._invoke(connect_event(info, headers=request.headers,
                                                  query=request.query))
        status = int(answer.get("statusCode", 200))
        if not 200 <= status < 300:
            return web.Response(status=status, text=str(answer.get("body") or ""),
                                headers=answer.get("headers") or {})
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        self._connections[info.connection_id] = LocalConnection(ws, info, now_ms)
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._connections[info.connection_id].last_active_ms = int(
                        time.time() * 1000)
                    self.spawn(message_event(info, message.data))
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self._connections.pop(info.connection_id, None)
            await self._invoke_logged(disconnect_event(info,
                                                       status_code=ws.close_code or 1006))
        return ws

    def spawn(self, event: Event) -> None:
        """An invocation nobody waits for: a frame's ``$default``, or an asynchronous one."""
        task = asyncio.create_task(self._invoke_logged(event))
        self._invocations.add(task)
        task.add_done_callback(self._invocations.discard)

    async def _invoke_logged(self, event: Event) -> Response:
        try:
            answer = await self._invoke(event)
        except Exception:  # a Lambda error: API Gateway logs it and the socket stays
            log.exception("invocation_failed")
            return {"statusCode": 500}
        return answer

    async def aclose(self) -> None:
        """Let invocations in flight finish (bounded), then close the sockets."""
        if self._invocations:
            _, pending = await asyncio.wait(set(self._invocations), timeout=DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for connection in list(self._connections.values()):
            await connection.ws.close()

    # --- management API -----------------------------------------------------------------

    def _live(self, request: web.Request) -> LocalConnection | None:
        connection = self._connections.get(request.match_info["connection_id"])
        return None if connection is None or connection.ws.closed else connection

    async def post_to_connection(self, request: web.Request) -> web.Response:
        if (refused := _unsigned(request)) is not None:
            return refused
        connection = self._live(request)
        data = await request.read()
        if connection is None:
            return _gone(request)
        try:
            async with connection.send_lock:
                await connection.ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            return _gone(request)
        return web.Response(status=200)

    async def get_connection(self, request: web.Request) -> web.Response:
        if (refused := _unsigned(request)) is not None:
            return refused
        connection = self._live(request)
        if connection is None:
            return _gone(request)
        info = connection.info
        return web.json_response({
            "connectedAt": _iso(info.connected_at_ms),
            "identity": {"sourceIp": info.source_ip, "userAgent": info.user_agent},
            "lastActiveAt": _iso(connection.last_active_ms),
        })

    async def delete_connection(self, request: web.Request) -> web.Response:
        if (refused := _unsigned(request)) is not None:
            return refused
        connection = self._live(request)
        if connection is None:
            return _gone(request)
        await connection.ws.close()
        return web.Response(status=204)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _aws_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"message": message}),
                        content_type="application/json",
                        headers={"x-amzn-ErrorType": code})


def _gone(request: web.Request) -> web.Response:
    return _aws_error(410, "GoneException",
                      f"connection {request.match_info['connection_id']} is gone")


def _unsigned(request: web.Request) -> web.Response | None:
    if request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
        return None
    return _aws_error(403, "ForbiddenException", "missing SigV4 authentication")


class RoundRobin:
    """Spreads invocations over handler instances, as over Lambda execution environments."""

    def __init__(self, gateways: list[LambdaGateway]) -> None:
        self.gateways = gateways
        self._next = itertools.cycle(gateways)

    async def __call__(self, event: Event) -> Response:
        return await next(self._next).handle(event)


GATEWAYS_KEY = web.AppKey("lambda_gateways", RoundRobin)
EMULATOR_KEY = web.AppKey("apigw_emulator", ApiGatewayEmulator)


def create_lambda_app(config: Config, *, settings: LambdaSettings | None = None,
                      stage: str = "local", instances: int = 1, run_persister: bool = True,
                      async_turns: bool = False,
                      metrics: Metrics | None = None) -> web.Application:
    """The gateway through the Lambda handlers: ``/v1/ws``, the Management API, health.

    Unlike on Lambda, the outbox persister runs in the background here (one per instance;
    ``run_persister=False`` leaves the outbox to another process).
    """
    if instances < 1:
        raise ValueError("instances must be at least 1")
    settings = (settings or LambdaSettings.from_env(os.environ)).for_local_emulator()
    app = web.Application()

    async def invoke_later(event: Event) -> None:
        app[EMULATOR_KEY].spawn(event)

    dispatcher = TaskDispatcher(invoke_later) if async_turns else None

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            gateways = [await stack.enter_async_context(open_lambda_gateway(
                config, settings, run_persister=run_persister, dispatcher=dispatcher,
                metrics=metrics if i == 0 else None))
                for i in range(instances)]
            app[GATEWAYS_KEY] = invoke = RoundRobin(gateways)
            app[EMULATOR_KEY] = emulator = ApiGatewayEmulator(invoke, stage=stage)
            yield
            await emulator.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v1/ws", _route(lambda e: e.websocket))
    connections = f"/{stage}/@connections/{{connection_id}}"
    app.router.add_post(connections, _route(lambda e: e.post_to_connection))
    app.router.add_get(connections, _route(lambda e: e.get_connection))
    app.router.add_delete(connections, _route(lambda e: e.delete_connection))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(method: Callable[[ApiGatewayEmulator], Handler]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await method(request.app[EMULATOR_KEY])(request)

    return handler


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "transport": "lambda"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[GATEWAYS_KEY].gateways[0].runtime
    try:
        await runtime.redis.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        return web.json_response({"status": "unavailable", "redis": type(exc).__name__},
                                 status=503)
    return web.json_response({"status": "ready", "redis": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    runtime = request.app[GATEWAYS_KEY].gateways[0].runtime
    return web.Response(body=generate_latest(runtime.metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
