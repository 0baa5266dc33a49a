"""Turns that outlive API Gateway's 29-second integration timeout.

API Gateway waits at most 29 s for the ``$default`` invocation; past that it sends the
client an ``Endpoint request timed out`` message of its own, although the function goes
on streaming. So on AWS a ``chat`` frame is validated in the ``$default`` invocation,
which then hands the same event to an asynchronous invocation of the chat function
(``InvocationType=Event``, no retries: a replayed turn would bill twice) and returns at
once; the asynchronous invocation runs the turn, as long as the function's timeout
allows. ``cancel`` and ``ping`` stay inline. Without ``CHATGATE_TURN_FUNCTION`` (the
local emulator), turns run inline in ``$default``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson

from deploy.events import Event
from deploy.settings import LambdaSettings

TURN_KEY = "chatgate_turn"


class DispatchFailed(Exception):
    """The turn could not be handed to an asynchronous invocation."""


class TurnDispatcher(Protocol):
    async def dispatch(self, event: Event) -> None:
        """Run ``event`` (a wrapped ``$default`` chat event) in another invocation."""
        ...


def wrap_turn(event: Event) -> dict[str, Any]:
    return {TURN_KEY: dict(event)}


def unwrap_turn(event: Event) -> Event | None:
    inner = event.get(TURN_KEY)
    return inner if isinstance(inner, Mapping) else None


class LambdaDispatcher:
    """Asynchronous ``Invoke`` of the chat function (``NAME:ALIAS``) through aioboto3."""

    def __init__(self, function: str, settings: LambdaSettings) -> None:
        self._function = function
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def aclose(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def dispatch(self, event: Event) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._lambda()
        try:
            response = await client.invoke(FunctionName=self._function, InvocationType="Event",
                                           Payload=orjson.dumps(event))
        except (BotoCoreError, ClientError) as exc:
            raise DispatchFailed(type(exc).__name__) from exc
        if response.get("StatusCode") != 202:
            raise DispatchFailed(f"Invoke answered {response.get('StatusCode')}")

    async def _lambda(self) -> Any:
        if self._client is None:
            import aioboto3
            from aiobotocore.config import AioConfig

            session = aioboto3.Session(region_name=self._settings.region)
            config = AioConfig(connect_timeout=2, read_timeout=5,
                               retries={"mode": "standard", "max_attempts": 3})
            self._client = await self._stack.enter_async_context(
                session.client("lambda", config=config))
        return self._client


class TaskDispatcher:
    """The emulator's asynchronous invocation: the event handed to ``spawn``."""

    def __init__(self, spawn: Callable[[Event], Awaitable[None]]) -> None:
        self._spawn = spawn
        self.dispatched = 0

    async def dispatch(self, event: Event) -> None:
        self.dispatched += 1
        await self._spawn(event)
