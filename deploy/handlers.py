"""AWS Lambda entry points: ``deploy.handlers.handle`` and ``deploy.handlers.persist``.

``handle`` serves every route of the WebSocket API (``$connect``, ``$default``,
``$disconnect``; see :class:`deploy.lambda_gateway.LambdaGateway`). ``persist`` is the
scheduled persister draining the Redis outbox into DynamoDB and S3.

Lambda calls a Python handler synchronously, one event at a time per execution
environment, and keeps the environment warm between events. So the async core runs on
one event loop per process, created on the first event and reused by every later one,
and the runtime (Redis pool, DynamoDB and Management API clients, providers) is opened
on the first real event and kept open: warm invocations pay for none of it. A scheduled
warm-up (``{"warmup": true}`` or an EventBridge ``{"source": "aws.events"}``) is
answered before any of that, without touching Redis or a provider.

Imports are kept lean for cold starts: this module needs only the standard library and
:mod:`deploy.events`; the core is imported on the first real event. Where the
environment is initialised ahead of traffic (provisioned concurrency, SnapStart),
``CHATGATE_PRELOAD=1`` imports the core during init instead, without opening a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from deploy.events import Event, Response, is_warmup, response

if TYPE_CHECKING:
    from deploy.lambda_gateway import LambdaGateway

WARM = response(200, "warm")
Work = Callable[["LambdaGateway"], Awaitable[Response]]


class LambdaProcess:
    """What the invocations of one execution environment share: a loop and a gateway."""

    def __init__(self, *, tune_gc: bool = True) -> None:
        """``tune_gc``: tune the process's garbage collector for serving once the gateway
        is open (:mod:`gateway.gc_policy`); tests that share their process say no."""
        self._tune_gc = tune_gc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._gateway: LambdaGateway | None = None

    @property
    def opened(self) -> bool:
        return self._gateway is not None

    @property
    def gateway(self) -> LambdaGateway | None:
        return self._gateway

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def run(self, work: Work) -> Response:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop.run_until_complete(self._run(work))

    async def _run(self, work: Work) -> Response:
        if self._gateway is None:
            self._gateway = await self._open()
        return await work(self._gateway)

    async def _open(self) -> LambdaGateway:
        from deploy.lambda_gateway import open_lambda_gateway
        from deploy.settings import LambdaSettings
        from gateway.config import load_config
        from gateway.observability import configure_logging

        configure_logging(os.environ.get("CHATGATE_LOG_LEVEL", "INFO"))
        stack = contextlib.AsyncExitStack()
        # No background persister: a frozen environment would stall it mid-batch; the
        # scheduled ``persist`` function drains the outbox instead.
        gateway = await stack.enter_async_context(open_lambda_gateway(
            load_config(), LambdaSettings.from_env(os.environ), run_persister=False))
        self._stack = stack
        if self._tune_gc:
            from gateway.gc_policy import tune_for_serving

            tune_for_serving()  # the environment's lasting heap is built: freeze it
        return gateway

    def close(self) -> None:
        """Close the runtime and the loop (a test's teardown, or a shutdown hook)."""
        loop, stack = self._loop, self._stack
        self._loop = self._stack = self._gateway = None
        if loop is None or loop.is_closed():
            return
        if stack is not None:
            loop.run_until_complete(stack.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


process = LambdaProcess()


def handle(event: Event, context: Any = None) -> Response:
    """Every route of the WebSocket API, and the keep-warm schedule."""
    if is_warmup(event):
        return WARM
    return process.run(lambda gateway: gateway.handle(event))


def persist(event: Event, context: Any = None) -> Response:
    """The scheduled persister: one drain of the outbox per event."""
    return process.run(lambda gateway: gateway.drain_outbox())


def preload() -> None:
    """Import the core now (init phase), opening nothing."""
    import deploy.lambda_gateway  # noqa: F401


if os.environ.get("CHATGATE_PRELOAD") == "1":
    preload()
