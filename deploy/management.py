"""The API Gateway Management API: how frames reach a WebSocket client from Lambda.

One aioboto3 ``apigatewaymanagementapi`` client per endpoint
(``https://{domainName}/{stage}``, or the emulator's ``http://127.0.0.1:PORT/local``),
opened on first use and kept for the life of the process (warm invocations reuse it).
Errors are translated here, once, by the service's typed error code and HTTP status:
``GoneException`` / 410 means the client left; anything else that survives botocore's
retries means the frame cannot be delivered. Both end the turn (``DeliveryFailed``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from deploy.coalesce import DeliveryFailed
from deploy.settings import LambdaSettings

log = structlog.get_logger("chatgate.lambda")
GONE_CODE = "GoneException"
DELIVERY_ERRORS = (ClientError, BotoCoreError, OSError, TimeoutError)


@dataclass(slots=True)
class DeliveryStats:
    """What the management API said, for logs, metrics and tests."""

    posts: int = 0
    gone: int = 0
    failures: int = 0


def is_gone(code: str, status: int | None) -> bool:
    return code == GONE_CODE or status == 410


class ManagementApi:
    """``post_to_connection`` and ``delete_connection`` with typed failures."""

    def __init__(self, settings: LambdaSettings) -> None:
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.stats = DeliveryStats()

    async def aclose(self) -> None:
        self._clients.clear()
        await self._stack.aclose()

    async def post(self, endpoint: str, connection_id: str, data: bytes) -> None:
        client = await self._client(endpoint)
        try:
            await client.post_to_connection(ConnectionId=connection_id, Data=data)
        except DELIVERY_ERRORS as exc:
            raise self._failure(exc, connection_id, "post") from exc
        self.stats.posts += 1

    async def delete(self, endpoint: str, connection_id: str) -> None:
        """Close the client's socket; a connection already gone is not an error."""
        client = await self._client(endpoint)
        try:
            await client.delete_connection(ConnectionId=connection_id)
        except DELIVERY_ERRORS as exc:
            failure = self._failure(exc, connection_id, "delete")
            if not failure.gone:
                raise failure from exc

    def _failure(self, exc: Exception, connection_id: str, action: str) -> DeliveryFailed:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if is_gone(code, status):
                self.stats.gone += 1
                log.info("connection_gone", connection_id=connection_id, action=action)
                return DeliveryFailed(f"connection {connection_id} is gone", gone=True)
            detail = code or str(status)
        else:
            detail = type(exc).__name__
        self.stats.failures += 1
        log.warning("delivery_failed", connection_id=connection_id, action=action,
                    error=detail)
        return DeliveryFailed(f"{action} to connection failed: {detail}", gone=False)

    async def _client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is not None:
            return client
        async with self._lock:
            if endpoint not in self._clients:
                self._clients[endpoint] = await self._open(endpoint)
            return self._clients[endpoint]

    async def _open(self, endpoint: str) -> Any:
        import aioboto3
        from aiobotocore.config import AioConfig

        credentials = self._settings.credentials
        session = aioboto3.Session(
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
            region_name=self._settings.region)
        config = AioConfig(connect_timeout=2, read_timeout=5,
                           retries={"mode": "standard", "max_attempts": 3})
        return await self._stack.enter_async_context(session.client(
            "apigatewaymanagementapi", endpoint_url=endpoint, config=config))


@dataclass(frozen=True, slots=True)
class ConnectionPoster:
    """A :class:`~deploy.coalesce.FramePoster` for one connection."""

    api: ManagementApi
    endpoint: str
    connection_id: str

    async def post(self, data: bytes) -> None:
        await self.api.post(self.endpoint, self.connection_id, data)
