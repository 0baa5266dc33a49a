"""The aiohttp application: routes, and the runtime in the app's lifecycle."""

from __future__ import annotations

import ipaddress
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.auth import issue_token
from gateway.config import Config
from gateway.errors import Forbidden, InvalidRequest
from gateway.http_api import add_routes
from gateway.http_errors import add_guarded
from gateway.observability import Metrics
from gateway.openai_compat import chat_completions
from gateway.runtime import RUNTIME_KEY, open_runtime
from gateway.ws import SOCKETS, close_all, websocket

STATIC_DIR = Path(__file__).parent / "static"


def create_app(config: Config, *, clock: Callable[[], float] = time.time,
               metrics: Metrics | None = None) -> web.Application:
    app = web.Application(client_max_size=config.limits.max_frame_bytes * 4)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(config, clock=clock, metrics=metrics) as runtime:
            app[RUNTIME_KEY] = runtime
            yield

    app.cleanup_ctx.append(runtime_ctx)
    app[SOCKETS] = weakref.WeakSet()

    async def close_sockets(app: web.Application) -> None:
        await close_all(app[SOCKETS])

    app.on_shutdown.append(close_sockets)
    app.router.add_get("/v1/ws", websocket)  # answers its own errors: see ``guarded``
    add_guarded(app, "GET", "/healthz", healthz)
    add_guarded(app, "GET", "/readyz", readyz)
    add_guarded(app, "GET", "/metrics", metrics_endpoint)
    add_routes(app)
    add_guarded(app, "GET", "/", chat_page)
    app.router.add_static("/static", STATIC_DIR)
    add_guarded(app, "GET", "/dev/token", dev_token)
    add_guarded(app, "POST", "/v1/chat/completions", chat_completions)
    return app


async def chat_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def dev_token(request: web.Request) -> web.Response:
    """Dev tokens for the chat page: only with the generated dev secret, only on loopback."""
    runtime = request.app[RUNTIME_KEY]
    secret = runtime.dev_secret
    proxied = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    if (secret is None or runtime.config.settings.jwt_secret or proxied
            or not _is_loopback(request)):
        raise Forbidden("dev tokens are only issued on loopback with the generated dev secret")
    user, brand = request.query.get("user", ""), request.query.get("brand", "")
    plan = request.query.get("plan", "free")
    if not user or runtime.config.brand(brand) is None or runtime.config.plan(plan) is None:
        raise InvalidRequest("user, a configured brand and a configured plan are required")
    return web.json_response({"token": issue_token(secret, user=user, brand=brand, plan=plan)})


def _is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    try:
        await runtime.redis.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        return web.json_response({"status": "unavailable", "redis": type(exc).__name__},
                                 status=503)
    return web.json_response({"status": "ready", "redis": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = generate_latest(runtime.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
