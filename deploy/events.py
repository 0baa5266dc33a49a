"""API Gateway WebSocket events for Lambda: read by the handlers, built by the emulator.

Pure functions over plain dicts, the shapes API Gateway sends to a Lambda proxy
integration (payload format 1.0):

    {"requestContext": {"routeKey": "$connect" | "$default" | "$disconnect",
                        "eventType": "CONNECT" | "MESSAGE" | "DISCONNECT",
                        "connectionId": "...", "domainName": "...", "stage": "...", ...},
     "headers": {...}, "queryStringParameters": {...},     # $connect only
     "body": "...", "isBase64Encoded": false}              # $default only

A scheduled warm-up (an EventBridge rule's ``{"source": "aws.events", ...}`` or a plain
``{"warmup": true}``) carries no ``requestContext`` and is answered at once.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Event = Mapping[str, Any]
Response = dict[str, Any]

EVENT_TYPES = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}
WARMUP_SOURCES = frozenset({"aws.events", "serverless-plugin-warmup"})


class MalformedEvent(ValueError):
    """Not an API Gateway WebSocket event this gateway can handle."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    route_key: str
    event_type: str
    connection_id: str
    domain_name: str
    stage: str
    request_id: str = ""


def is_warmup(event: Event) -> bool:
    """A keep-warm ping: no request context, and a scheduler's source or ``warmup``."""
    if "requestContext" in event:
        return False
    return event.get("warmup") is True or event.get("source") in WARMUP_SOURCES


def request_context(event: Event) -> RequestContext:
    context = event.get("requestContext")
    if not isinstance(context, Mapping):
        raise MalformedEvent("event without requestContext")
    values = {}
    for key in ("routeKey", "connectionId", "domainName", "stage"):
        value = context.get(key)
        if not isinstance(value, str) or not value:
            raise MalformedEvent(f"requestContext.{key} missing")
        values[key] = value
    event_type = context.get("eventType") or EVENT_TYPES.get(values["routeKey"], "MESSAGE")
    return RequestContext(route_key=values["routeKey"], event_type=str(event_type),
                          connection_id=values["connectionId"],
                          domain_name=values["domainName"], stage=values["stage"],
                          request_id=str(context.get("requestId", "")))


def bearer_token(event: Event) -> str | None:
    """The ``Authorization: Bearer`` token of a ``$connect``, else its ``token`` parameter."""
    headers = event.get("headers") or {}
    for name, value in headers.items():
        if name.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    query = event.get("queryStringParameters") or {}
    value = query.get("token")
    return value if isinstance(value, str) and value else None


def message_body(event: Event) -> tuple[str | bytes, bool]:
    """A ``$default`` event's frame and whether it was binary (base64 in the event)."""
    body = event.get("body")
    if body is None:
        return "", False
    if not isinstance(body, str):
        raise MalformedEvent("body must be a string")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True), True
        except binascii.Error:
            raise MalformedEvent("body is not valid base64") from None
    return body, False


def response(status: int, body: str = "") -> Response:
    return {"statusCode": status, "body": body}


# --- building events (the local emulator) -----------------------------------------------

_request_ids = itertools.count(1)


def new_connection_id() -> str:
    """An id shaped like API Gateway's (16 characters of URL-safe base64)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes[:11]).decode().rstrip("=") + "="


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    connection_id: str
    domain_name: str
    stage: str
    source_ip: str
    user_agent: str
    connected_at_ms: int


def _context(info: ConnectionInfo, route_key: str, event_type: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "routeKey": route_key, "eventType": event_type, "connectionId": info.connection_id,
        "domainName": info.domain_name, "stage": info.stage, "apiId": "local",
        "requestId": f"local-{next(_request_ids)}", "messageDirection": "IN",
        "connectedAt": info.connected_at_ms, "requestTimeEpoch": now_ms,
        "identity": {"sourceIp": info.source_ip, "userAgent": info.user_agent},
    }


def connect_event(info: ConnectionInfo, *, headers: Mapping[str, str],
                  query: Mapping[str, str]) -> dict[str, Any]:
    return {
        "requestContext": _context(info, "$connect", "CONNECT"),
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": dict(query) or None,
        "isBase64Encoded": False,
    }


def message_event(info: ConnectionInfo, data: str | bytes) -> dict[str, Any]:
    binary = isinstance(data, bytes)
    body = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    context = _context(info, "$default", "MESSAGE")
    context["messageId"] = uuid.uuid4().hex[:16]
    return {"requestContext": context, "body": body, "isBase64Encoded": binary}


def disconnect_event(info: ConnectionInfo, *, status_code: int,
                     reason: str = "") -> dict[str, Any]:
    context = _context(info, "$disconnect", "DISCONNECT")
    context.update(disconnectStatusCode=status_code, disconnectReason=reason)
    return {"requestContext": context, "isBase64Encoded": False}
