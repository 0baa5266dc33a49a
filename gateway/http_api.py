"""HTTP resources: the caller's conversations and usage, and the brand admin's views.

Every handler authenticates with the same JWT as the WebSocket; every read and delete is
scoped to the caller's brand and user, so another user's conversation is ``not_found``.
Admin routes need the ``admin`` role *and* the same brand as the path.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.auth import Principal, token_from_request
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.http_errors import add_guarded
from gateway.runtime import RUNTIME_KEY
from memory.hot import is_conversation_id
from memory.preferences import PreferenceError, validate_preferences
from memory.warm.base import InvalidCursor


async def principal_of(request: web.Request) -> Principal:
    return await request.app[RUNTIME_KEY].verifier.verify_async(token_from_request(request))


async def _admin_of(request: web.Request) -> Principal:
    principal = await principal_of(request)
    if not principal.is_admin or principal.brand != request.match_info["brand"]:
        raise Forbidden("admin role for this brand required")
    return principal


def _int_query(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo} and {hi}")
    return value


def _float_query(request: web.Request, name: str) -> float:
    raw = request.query.get(name, "0")
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be epoch seconds") from None


def _conversation_id(request: web.Request) -> str:
    value = request.match_info["conversation_id"]
    if not is_conversation_id(value):
        raise NotFound("conversation not found")
    return value


async def list_conversations(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    limit = _int_query(request, "limit", 50, lo=1, hi=200)
    try:
        page = await runtime.history.list_conversations(
            principal.brand, principal.user_id, limit=limit, cursor=request.query.get("cursor"))
    except InvalidCursor:
        raise InvalidRequest("invalid cursor") from None
    return web.json_response({"data": [_meta_view(m.to_dict()) for m in page.items],
                              "next_cursor": page.cursor})


async def get_conversation(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    conversation_id = _conversation_id(request)
    meta = await runtime.history.get_conversation(principal.brand, principal.user_id,
                                                  conversation_id)
    loaded = await runtime.conversations.load(principal.brand, principal.user_id,
                                              conversation_id)
    if loaded is None:
        raise NotFound("conversation not found")
    warm_messages = await runtime.history.messages(principal.brand, principal.user_id,
                                                   conversation_id) if meta else []
    messages = warm_messages if len(warm_messages) >= len(loaded.messages) else loaded.messages
    body: dict[str, Any] = _meta_view(meta.to_dict()) if meta else {
        "conversation_id": conversation_id, "message_count": len(loaded.messages)}
    body["messages"] = [m.to_dict() for m in messages]
    return web.json_response(body)


async def delete_conversation(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    conversation_id = _conversation_id(request)
    if await runtime.conversations.load(principal.brand, principal.user_id,
                                        conversation_id) is None:
        raise NotFound("conversation not found")
    plan = runtime.config.plan(principal.plan)
    await runtime.delete_conversation(principal.brand, principal.user_id, conversation_id,
                                      archived=plan is not None and plan.archive)
    return web.json_response({"deleted": True, "conversation_id": conversation_id})


async def usage(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    plan = runtime.config.plans[principal.plan]
    brand = runtime.config.brands[principal.brand]
    view = await runtime.ledger.usage(principal.brand, principal.user_id)
    return web.json_response({
        "plan": plan.name,
        "user": {
            "day": {"used": view.user_day.used, "reserved": view.user_day.reserved,
                    "limit": plan.tokens_per_day, "period": view.day},
            "month": {"used": view.user_month.used, "reserved": view.user_month.reserved,
                      "limit": plan.tokens_per_month, "period": view.month},
        },
        "brand": {"month": {"used": view.brand_month.used,
                            "reserved": view.brand_month.reserved,
                            "limit": brand.monthly_budget,
                            "cost_usd": view.brand_month.cost_usd,
                            "period": view.month}},
    })


async def admin_brand_usage(request: web.Request) -> web.Response:
    principal, runtime = await _admin_of(request), request.app[RUNTIME_KEY]
    month = request.query.get("month")
    if month is not None and not (len(month) == 6 and month.isdigit()):
        raise InvalidRequest("month must be YYYYMM")
    brand = runtime.config.brands[principal.brand]
    usage = await runtime.ledger.brand_usage(principal.brand, month)
    return web.json_response({"brand": brand.name, "month": {
        "period": usage.month, "used": usage.used, "reserved": usage.reserved,
        "limit": brand.monthly_budget, "cost_usd": usage.cost_usd,
        "alert_threshold": brand.alert_threshold, "alerted": usage.alerted}})


async def admin_audit(request: web.Request) -> web.Response:
    principal, runtime = await _admin_of(request), request.app[RUNTIME_KEY]
    limit = _int_query(request, "limit", 100, lo=1, hi=1000)
    try:
        page = await runtime.history.list_audit(principal.brand,
                                                since=_float_query(request, "since"),
                                                limit=limit, cursor=request.query.get("cursor"))
    except InvalidCursor:
        raise InvalidRequest("invalid cursor") from None
    return web.json_response({"data": page.items, "next_cursor": page.cursor})


async def get_preferences(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    return web.json_response(await runtime.preferences.get(principal.brand, principal.user_id))


async def put_preferences(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    try:
        prefs = validate_preferences(await _json_body(request))
    except PreferenceError as exc:
        raise InvalidRequest(str(exc)) from None
    if await runtime.preferences.replace(principal.brand, principal.user_id, prefs):
        await runtime.cache.invalidate(principal.brand, scope="user",
                                       user_id=principal.user_id)
    return web.json_response(prefs)


async def admin_cache_invalidate(request: web.Request) -> web.Response:
    principal, runtime = await principal_of(request), request.app[RUNTIME_KEY]
    if not principal.is_admin:
        raise Forbidden("admin role required")
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    scope = body.get("scope")
    model, user_id = body.get("model"), body.get("user_id")
    if scope == "model" and not (isinstance(model, str) and model):
        raise InvalidRequest("scope 'model' needs a 'model'")
    if scope == "user" and not (isinstance(user_id, str) and user_id):
        raise InvalidRequest("scope 'user' needs a 'user_id'")
    if scope not in ("brand", "model", "user"):
        raise InvalidRequest("scope must be 'brand', 'model' or 'user'")
    generation = await runtime.cache.invalidate(
        principal.brand, scope=scope, model=model if isinstance(model, str) else None,
        user_id=user_id if isinstance(user_id, str) else None)
    return web.json_response({"brand": principal.brand, "scope": scope,
                              "generation": generation})


async def _json_body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("body is not valid JSON") from None


def _meta_view(meta: dict[str, Any]) -> dict[str, Any]:
    """What a caller sees of a conversation's metadata (no internal fields)."""
    meta.pop("brand", None)
    meta.pop("user_id", None)
    return meta


def add_routes(app: web.Application) -> None:
    add_guarded(app, "GET", "/v1/conversations", list_conversations)
    add_guarded(app, "GET", "/v1/conversations/{conversation_id}", get_conversation)
    add_guarded(app, "DELETE", "/v1/conversations/{conversation_id}", delete_conversation)
    add_guarded(app, "GET", "/v1/usage", usage)
    add_guarded(app, "GET", "/admin/brands/{brand}/usage", admin_brand_usage)
    add_guarded(app, "GET", "/admin/brands/{brand}/audit", admin_audit)
    add_guarded(app, "GET", "/v1/preferences", get_preferences)
    add_guarded(app, "PUT", "/v1/preferences", put_preferences)
    add_guarded(app, "POST", "/admin/cache/invalidate", admin_cache_invalidate)
