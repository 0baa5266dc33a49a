"""The WebSocket API's routes on Lambda, over the same :class:`~gateway.service.ChatService`.

``$connect`` verifies the JWT (``Authorization: Bearer`` or the ``token`` query
parameter) and records the caller's claims in Redis under the connection id; a bad token
is refused with 401, so API Gateway refuses the upgrade before any frame. ``$default``
carries one client frame: ``chat`` runs a whole turn (in this invocation, or in an
asynchronous one, see :mod:`deploy.dispatch`), its frames posted through the Management
API by a coalescing sink; ``cancel`` marks the chat in
Redis for the invocation running it (see :mod:`deploy.connections`); ``ping`` gets
``pong``. ``$disconnect`` forgets the connection. The frames out, the validation and the
errors are those of the aiohttp socket (:mod:`gateway.ws`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import structlog
from redis.exceptions import RedisError

from deploy.coalesce import CoalescingSink, DeliveryFailed
from deploy.connections import ChatAdmission, ConnectionRegistry
from deploy.dispatch import (
    DispatchFailed,
    LambdaDispatcher,
    TurnDispatcher,
    unwrap_turn,
    wrap_turn,
)
from deploy.events import (
    Event,
    MalformedEvent,
    RequestContext,
    Response,
    bearer_token,
    message_body,
    request_context,
    response,
)
from deploy.management import ConnectionPoster, DeliveryStats, ManagementApi
from deploy.metrics import emf_document, turn_values, write_emf
from deploy.settings import LambdaSettings
from gateway.auth import Principal
from gateway.config import Config, Limits
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from gateway.frames import (
    CancelFrame,
    ChatFrame,
    ClientFrame,
    ErrorFrame,
    FrameError,
    PingFrame,
    PongFrame,
    ServerFrame,
    encode_frame,
    parse_client_frame,
)
from gateway.http_errors import error_body
from gateway.observability import Metrics
from gateway.runtime import Runtime, open_runtime
from gateway.service import TurnControl, TurnState

log = structlog.get_logger("chatgate.lambda")


def read_frame(data: str | bytes, *, binary: bool, limits: Limits) -> ClientFrame:
    """One client frame, checked as the aiohttp socket checks it; raises FrameError."""
    if binary:
        raise FrameError("binary frames are not supported: send JSON text frames")
    size = len(data.encode()) if isinstance(data, str) else len(data)
    if size > limits.max_frame_bytes:
        raise FrameError(f"frame larger than {limits.max_frame_bytes} bytes")
    return parse_client_frame(data, max_message_chars=limits.max_message_chars)


def refusal(error: GatewayError) -> Response:
    """A ``$connect`` refusal: API Gateway answers the upgrade with this status."""
    headers = {"Content-Type": "application/json"}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="chatgate"'
    return {"statusCode": error.status, "headers": headers,
            "body": orjson.dumps(error_body(error)).decode()}


class LambdaGateway:
    """Handles API Gateway WebSocket events with one runtime (one per process on Lambda)."""

    def __init__(self, runtime: Runtime, *, settings: LambdaSettings,
                 management: ManagementApi, registry: ConnectionRegistry,
                 dispatcher: TurnDispatcher | None = None) -> None:
        self.runtime = runtime
        self._settings = settings
        self._management = management
        self._registry = registry
        self._dispatcher = dispatcher
        self._limits = runtime.config.limits

    @property
    def delivery(self) -> DeliveryStats:
        return self._management.stats

    @property
    def dispatcher(self) -> TurnDispatcher | None:
        return self._dispatcher

    async def handle(self, event: Event) -> Response:
        turn = unwrap_turn(event)
        event = turn if turn is not None else event
        try:
            context = request_context(event)
        except MalformedEvent as exc:
            log.warning("malformed_event", error=str(exc))
            return response(400, str(exc))
        with structlog.contextvars.bound_contextvars(connection_id=context.connection_id,
                                                     route=context.route_key):
            if context.event_type == "CONNECT":
                return await self._connect(event, context)
            if context.event_type == "DISCONNECT":
                await self._registry.forget(context.connection_id)
                return response(200)
            await self._message(event, context, dispatched=turn is not None)
            return response(200)

    async def drain_outbox(self) -> Response:
        """The scheduled persister: move finished turns from Redis to warm/cold storage."""
        persister = self.runtime.persister
        handled = await persister.drain() if persister is not None else 0
        log.info("outbox_drained", entries=handled)
        return response(200, f"drained {handled}")

    # --- routes -------------------------------------------------------------------------

    async def _connect(self, event: Event, context: RequestContext) -> Response:
        token = bearer_token(event)
        try:
            if token is None:
                raise Unauthorized("missing bearer token")
            principal = self.runtime.verifier.verify(token)
        except Unauthorized as exc:
            log.info("connect_refused", reason=exc.message)
            return refusal(exc)
        await self._registry.register(context.connection_id, principal)
        self.runtime.metrics.connections.labels(principal.brand).inc()
        return response(200)

    async def _message(self, event: Event, context: RequestContext, *,
                       dispatched: bool) -> None:
        endpoint = self._settings.management_endpoint(domain_name=context.domain_name,
                                                      stage=context.stage)
        poster = ConnectionPoster(self._management, endpoint, context.connection_id)
        principal = await self._registry.principal(context.connection_id)
        if principal is None:  # expired record or a forged event: make the client reconnect
            await self._send_alone(poster, ErrorFrame.from_error(None, Unauthorized(
                "connection not authenticated: connect again")))
            with contextlib.suppress(DeliveryFailed):
                await self._management.delete(endpoint, context.connection_id)
            return
        structlog.contextvars.bind_contextvars(brand=principal.brand, user=principal.user_id)
        try:
            data, binary = message_body(event)
            frame = read_frame(data, binary=binary, limits=self._limits)
        except FrameError as exc:
            await self._send_alone(poster, ErrorFrame.from_error(exc.frame_id, exc))
            return
        except MalformedEvent as exc:
            await self._send_alone(poster, ErrorFrame.from_error(None, FrameError(str(exc))))
            return
        match frame:
            case ChatFrame() if self._dispatcher is not None and not dispatched:
                await self._dispatch(event, frame, poster)
            case ChatFrame():
                await self._chat(principal, frame, poster)
            case CancelFrame(id=chat_id):
                await self._registry.cancel_chat(context.connection_id, chat_id)
            case PingFrame():
                await self._send_alone(poster, PongFrame())

    # --- one turn -----------------------------------------------------------------------

    async def _dispatch(self, event: Event, frame: ChatFrame, poster: ConnectionPoster) -> None:
        assert self._dispatcher is not None
        try:
            await self._dispatcher.dispatch(wrap_turn(event))
        except DispatchFailed as exc:
            log.warning("dispatch_failed", chat_id=frame.id, error=str(exc))
            await self._send_alone(poster, ErrorFrame.from_error(
                frame.id, Unavailable("the chat could not be started; try again")))

    async def _chat(self, principal: Principal, frame: ChatFrame,
                    poster: ConnectionPoster) -> None:
        connection_id = poster.connection_id
        admission = await self._registry.begin_chat(
            connection_id, frame.id, max_chats=self._limits.max_chats_per_socket)
        if admission is ChatAdmission.DUPLICATE:
            await self._send_alone(poster, ErrorFrame.from_error(frame.id, InvalidRequest(
                f"chat {frame.id!r} is already in flight on this socket")))
            return
        if admission is ChatAdmission.TOO_MANY:
            limit = self._limits.max_chats_per_socket
            await self._send_alone(poster, ErrorFrame.from_error(frame.id, RateLimited(
                f"at most {limit} chats in flight per socket", retry_after_ms=100)))
            return
        control, finished = TurnControl(), asyncio.Event()
        sink = CoalescingSink(poster, max_bytes=self._settings.coalesce_bytes,
                              max_delay_s=self._settings.coalesce_ms / 1000)
        watcher = asyncio.create_task(
            self._watch_cancel(connection_id, frame.id, control, finished))
        try:
            state = await self.runtime.service.chat(principal, frame, sink, control)
        finally:
            finished.set()  # not cancel(): a cancel landing inside a Redis call can be lost
            await watcher
            await sink.aclose()
            await self._registry.end_chat(connection_id, frame.id)
        if sink.failure is not None:
            log.info("turn_ended_by_delivery", chat_id=frame.id, gone=sink.failure.gone)
        await self._emit_metrics(principal, state, sink)
        # Lambda freezes the environment once the handler returns: a rolling summary the
        # turn started in the background must finish within this invocation.
        await self.runtime.summarizer.drain()

    async def _watch_cancel(self, connection_id: str, chat_id: str, control: TurnControl,
                            finished: asyncio.Event) -> None:
        """Poll the chat's entry until the turn finishes; a ``cancel`` sets ``control``."""
        interval = self._settings.cancel_poll_ms / 1000
        while not control.cancelled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), timeout=interval)
            if finished.is_set():
                return
            try:
                if await self._registry.is_cancelled(connection_id, chat_id):
                    control.cancel()
            except RedisError as exc:  # a missed poll only delays the cancel
                log.warning("cancel_poll_failed", error=type(exc).__name__)

    async def _send_alone(self, poster: ConnectionPoster, frame: ServerFrame) -> None:
        with contextlib.suppress(DeliveryFailed):
            await poster.post(encode_frame(frame))

    async def _emit_metrics(self, principal: Principal, state: TurnState,
                            sink: CoalescingSink) -> None:
        namespace = self._settings.emf_namespace
        if not namespace:
            return
        ratio = None
        brand = self.runtime.config.brand(principal.brand)
        if brand is not None and brand.monthly_budget > 0 and state.admission is not None:
            try:
                usage = await self.runtime.ledger.brand_usage(brand.name)
                ratio = usage.committed / brand.monthly_budget
            except RedisError as exc:
                log.warning("budget_read_failed", error=type(exc).__name__)
        values = turn_values(outcome=state.outcome, done=sink.done, budget_ratio=ratio)
        write_emf(emf_document(namespace, principal.brand, values,
                               timestamp_ms=int(time.time() * 1000)))


@asynccontextmanager
async def open_lambda_gateway(config: Config, settings: LambdaSettings, *,
                              run_persister: bool = True, metrics: Metrics | None = None,
                              dispatcher: TurnDispatcher | None = None
                              ) -> AsyncIterator[LambdaGateway]:
    """The runtime, the Management API and Lambda clients and the registry, closed in
    reverse. ``settings.turn_function`` makes a :class:`LambdaDispatcher` unless a
    ``dispatcher`` is given."""
    async with open_runtime(config, run_persister=run_persister, metrics=metrics) as runtime, \
            contextlib.AsyncExitStack() as stack:
        management = ManagementApi(settings)
        stack.push_async_callback(management.aclose)
        if dispatcher is None and settings.turn_function:
            invoker = LambdaDispatcher(settings.turn_function, settings)
            stack.push_async_callback(invoker.aclose)
            dispatcher = invoker
        registry = ConnectionRegistry(runtime.redis, connection_ttl_s=settings.connection_ttl_s,
                                      chat_lease_s=settings.chat_lease_s)
        yield LambdaGateway(runtime, settings=settings, management=management,
                            registry=registry, dispatcher=dispatcher)
