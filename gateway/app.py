"""The aiohttp application: routes, and the runtime in the app's lifecycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config import Config
from gateway.http_api import add_routes
from gateway.http_errors import error_middleware
from gateway.observability import Metrics
from gateway.openai_compat import chat_completions
from gateway.runtime import RUNTIME_KEY, open_runtime
from gateway.ws import open_session

RUNTIME = RUNTIME_KEY


def create_app(config: Config, *, clock: Callable[[], float] = time.time,
               metrics: Metrics | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=config.limits.max_frame_bytes * 4)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(config, clock=clock, metrics=metrics) as runtime:
            app[RUNTIME] = runtime
            yield

    app.cleanup_ctx.append(runtime_ctx)
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    add_routes(app)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


async def websocket(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    return await open_session(request, service=runtime.service, verifier=runtime.verifier,
                              limits=runtime.config.limits)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        await runtime.redis.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        return web.json_response({"status": "unavailable", "redis": type(exc).__name__},
                                 status=503)
    return web.json_response({"status": "ready", "redis": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = generate_latest(runtime.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
