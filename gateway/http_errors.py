"""Gateway errors as HTTP responses, in OpenAI's error shape (so the SDKs parse them)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web

from gateway.errors import GatewayError, InternalError

log = structlog.get_logger("chatgate.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(error: GatewayError) -> dict[str, object]:
    return {"error": {"message": error.message, "type": error.code, "code": error.code,
                      **error.extra}}


def error_response(error: GatewayError, *, headers: dict[str, str] | None = None
                   ) -> web.Response:
    all_headers = dict(headers or {})
    retry_after_ms = error.extra.get("retry_after_ms")
    if isinstance(retry_after_ms, int):
        all_headers["Retry-After"] = str(max(1, -(-retry_after_ms // 1000)))
    if error.status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="chatgate"'
    return web.Response(status=error.status, body=orjson.dumps(error_body(error)),
                        content_type="application/json", headers=all_headers)


def guarded(handler: Handler) -> Handler:
    """``handler`` with typed errors answered as JSON responses and anything unexpected as a
    500 without detail.

    Every HTTP route is registered through it (``add_guarded``). The WebSocket route is
    not: it answers its own errors before the upgrade, and a socket's lifetime then keeps
    no wrapper (nor aiohttp's middleware chain) alive; that is memory per idle socket."""

    @functools.wraps(handler)
    async def answer_errors(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return error_response(exc)
        except (web.HTTPException, ConnectionResetError):  # the client left: nothing to answer
            raise
        except Exception:
            log.exception("http_handler_failed", path=request.path)
            return error_response(InternalError("internal error"))

    answer_errors.guarded = True  # type: ignore[attr-defined]
    return answer_errors


def add_guarded(app: web.Application, method: str, path: str, handler: Handler) -> None:
    app.router.add_route(method, path, guarded(handler))
