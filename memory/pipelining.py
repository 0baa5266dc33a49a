"""Auto-pipelining: the Redis calls that concurrent turns make share round trips.

A call (a Lua script by SHA, one command, or a group of commands that must travel
together) joins a queue; a flusher task sends everything queued so far as one
non-transactional pipeline and hands each caller its own reply. Each script and each
command still runs atomically on its own; only the network round trip and the client's
per-call overhead (connection checkout, packing, the write, the read loop) are shared.
Under load, one pipeline carries the rate checks, preference reads, reservations and
settlements of many turns; at most ``max_in_flight`` pipelines (connections) are out at
once, and a call waits for the next one. One by default: while a pipeline is out, the
calls of every other turn gather for the next, so a busy gateway sends fewer and fuller
pipelines (redis-py's per-pipeline work, the connection checkout, the write and the read
loop's setup, is paid once per batch). Measured side by side (two gateways at once on one
core, 100 WebSocket streams and a Redis each): 5 to 6 % less CPU per turn than with four
in flight. The cost is latency under load:
a call made while a pipeline is out waits for its reply (one round trip) before leaving.

Each batch is bounded as a whole (``timeout_s``): the client under an AutoPipeline reads
its replies with no per-reply timeout (:func:`memory.redis_client.connect_pipeline_client`),
since redis-py's ``socket_timeout`` arms an asyncio timer for every reply of a batch (and
a task for every write): measured side by side, 2 % of a turn's CPU. A batch that outlives
its bound fails every call in it with redis-py's ``TimeoutError``, and its connection is
closed (redis-py drops a connection whose read was interrupted), as a reply timeout did.

With ``hold_connection`` (a real server's client, as the runtime makes it), a batch goes out
on a connection the pipeline keeps between batches, with redis-py's pipeline protocol and
nothing around it: the connection checked first (reopened if the server closed it while it
was idle), every command packed into one write, then each reply read and passed through
the client's response callback (on a connection with no read timeout or health check of
its own, as the runtime's is, taken from redis-py's hiredis reader when it holds the reply
whole, without three coroutine levels a reply), retried as redis-py retries a pipeline
(the connection's ``Retry``: none unless configured; a retried batch is sent whole again,
scripts that ran included, as redis-py's would be). redis-py's ``Pipeline`` object adds a
pool checkout and release, its command stack, observability hooks and per-command checks:
measured against a real server, a batch of 16 commands cost 254 µs of CPU through it and
77 µs without it (83 with the check).

Scripts are redis-py ``Script`` objects: they know their SHA1 locally, run with
``EVALSHA``, and on ``NOSCRIPT`` (a restarted server, a failover, ``SCRIPT FLUSH``) are
loaded and rerun once, transparently. Errors stay with their caller: a script's error
reply fails only that call; a connection failure fails every call of its pipeline.
Redis Cluster clients are called directly (their commands route per slot).

A call is queued when it is made, not when its future is awaited: :meth:`AutoPipeline.run`
and :meth:`AutoPipeline.command` answer a future at once (its reply passed through the
call's ``convert``, if any, when it comes). So calls made one after another before the
caller awaits any of them share a round trip with no task of their own, as do wrappers
that answer such a future (chained with :func:`then`) instead of awaiting it in a
coroutine. A turn's preference read, reservation, settle, record with its journal entry
(a pipelined journal's) and cache publish are such wrappers: each ran in a task of its own
so that its calls could share a round trip (3.9 tasks a turn where there were 9.8, 0.92x
the CPU per turn: bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memory.redis_client import RedisClient

Command = tuple[Any, ...]
T = TypeVar("T")
R = TypeVar("R")
IDLE_PROBE_S = 10.0  # a kept connection idle this long is PINGed before its next batch
PROBE_TIMEOUT_S = 1.0  # and reopened if the PONG takes longer


@dataclass(slots=True)
class _Call:
    """One caller's request: a script (``script`` set), or commands (one or a group)."""

    script: AsyncScript | None = None
    keys: Sequence[Any] = ()
    args: Sequence[Any] = ()
    commands: Sequence[Command] = ()
    grouped: bool = False
    convert: Callable[[Any], Any] | None = None  # applied to a reply (not to an error)
    reply: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def size(self) -> int:
        return 1 if self.script is not None else len(self.commands)

    def answer(self, outcome: Any) -> None:
        """Hand the caller its outcome: a reply (converted, when asked) or an error; an
        error the conversion raises is the caller's too. Nothing if it has gone."""
        if self.reply.done():  # the caller was cancelled; the call ran (or failed) regardless
            return
        if self.convert is not None and not isinstance(outcome, BaseException):
            try:
                outcome = self.convert(outcome)
            except Exception as exc:
                outcome = exc
        if isinstance(outcome, BaseException):
            self.reply.set_exception(outcome)
        else:
            self.reply.set_result(outcome)


class AutoPipeline:
    """Runs scripts and commands; calls made concurrently share pipelined round trips."""

    def __init__(self, redis: RedisClient, *, max_batch: int = 256,
                 max_in_flight: int = 1, timeout_s: float | None = None,
                 hold_connection: bool = False, idle_probe_s: float = IDLE_PROBE_S) -> None:
        """``hold_connection``: send batches on connections kept between batches (one per
        pipeline in flight), taken from ``redis``'s pool once; for a redis-py client of a
        real server (not an embedded or cluster one). ``idle_probe_s``: a kept connection
        idle this long is probed with a PING before its next batch."""
        self.redis = redis
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pipelined = not isinstance(redis, RedisCluster)
        self._hold = hold_connection and self._pipelined
        # Kept connections between batches, with the loop time each was last used.
        self._held: list[tuple[AbstractConnection, float]] = []
        self._idle_probe_s = idle_probe_s
        self._queue: deque[_Call] = deque()
        self._active = 0
        self._starting = False  # a flusher was created and has not taken its batch yet
        self._flushers: set[asyncio.Task[None]] = set()

    def register(self, source: str) -> AsyncScript:
        return self.redis.register_script(source)

    def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], *,
            convert: Callable[[Any], Any] | None = None) -> asyncio.Future[Any]:
        """The script's reply (through ``convert``, if given), or the error it raised: a
        future, the call queued at once."""
        if not self._pipelined:
            return asyncio.ensure_future(
                _converted(lambda: script(keys=list(keys), args=list(args)), convert))
        return self._submit(_Call(script=script, keys=keys, args=args, convert=convert))

    def command(self, *args: Any,
                convert: Callable[[Any], Any] | None = None) -> asyncio.Future[Any]:
        """One command's reply (redis-py's response callbacks applied, as for a call on
        the client, then ``convert``, if given), or the error it raised: a future, the
        call queued at once."""
        if not self._pipelined:
            return asyncio.ensure_future(_converted(
                lambda: self.redis.execute_command(*args), convert))  # type: ignore[no-untyped-call]
        return self._submit(_Call(commands=(args,), convert=convert))

    async def group(self, commands: Sequence[Command]) -> list[Any]:
        """Commands sent back to back in one pipeline (not a transaction: use a script
        when they must be atomic); their replies, or the first error among them."""
        if not self._pipelined:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(await pipe.execute())
        if not commands:
            return []
        replies: list[Any] = await self._submit(_Call(commands=commands, grouped=True))
        return replies

    def _submit(self, call: _Call) -> asyncio.Future[Any]:
        self._queue.append(call)
        if not self._starting and self._active < self._max_in_flight:
            self._active += 1
            self._starting = True
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return call.reply

    async def _flush(self) -> None:
        # Seeing the queue empty and leaving the count happen with no await in between,
        # so a call queued meanwhile always finds a flusher running or starts one.
        try:
            # A call is queued when it is made: the tasks started in the same step as the
            # first call (``together``'s) run their first step, and queue theirs, before
            # the batch leaves.
            await asyncio.sleep(0)
            while self._queue:
                batch, size = [], 0
                while self._queue and size < self._max_batch:
                    call = self._queue.popleft()
                    if not call.reply.done():  # a caller cancelled before its call left
                        batch.append(call)
                        size += call.size
                self._starting = False
                await self._send(batch)
        finally:
            self._starting = False
            self._active -= 1

    async def _send(self, batch: list[_Call]) -> None:
        if not batch:
            return
        commands: list[Command] = []
        for call in batch:
            if call.script is not None:
                commands.append(("EVALSHA", call.script.sha, len(call.keys), *call.keys,
                                 *call.args))
            else:
                commands += call.commands
        try:
            replies = await self._bounded(self._execute(commands),
                                          f"{len(batch)} pipelined calls")
        except asyncio.CancelledError:
            for call in batch:
                call.reply.cancel()
            raise
        except Exception as exc:  # a connection failure (or a bad argument): every
            for call in batch:  # caller of the batch gets it, none is left waiting
                call.answer(exc)
            return
        unknown, at = [], 0
        for call in batch:
            mine = replies[at:at + call.size]
            at += call.size
            if call.script is not None and isinstance(mine[0], NoScriptError):
                unknown.append(call)
            elif call.grouped:
                error = next((r for r in mine if isinstance(r, Exception)), None)
                call.answer(error if error is not None else list(mine))
            else:
                call.answer(mine[0])
        if unknown:
            await self._load_and_rerun(unknown)

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """Every command's reply in order, an error reply as its exception (not raised)."""
        if not self._hold:
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        loop = asyncio.get_running_loop()
        if self._held:
            connection, used_at = self._held.pop()
        else:
            pool = self.redis.connection_pool
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            used_at = loop.time()
        try:  # everything after the pop: a bound that fires anywhere leaks no connection
            await _reopen_if_closed(
                connection, probe=loop.time() - used_at >= self._idle_probe_s)
            return await connection.retry.call_with_retry(
                lambda: self._round_trip(connection, commands),
                lambda error: connection.disconnect())
        finally:  # kept even when broken: its next send reconnects it
            self._held.append((connection, loop.time()))

    async def _round_trip(self, connection: AbstractConnection,
                          commands: list[Command]) -> list[Any]:
        """One write of every command, then every reply: an interrupted read (an error,
        a cancel, the batch's bound) disconnects the connection, so no reply is left
        for the next batch to take as its own."""
        await connection.send_packed_command(connection.pack_commands(commands))
        callbacks = self.redis.response_callbacks
        replies: list[Any] = []
        # redis-py's hiredis parser, as redis-py 8 has it, on a connection with nothing to
        # do per reply (no read timeout, no health-check clock to move, as the runtime's
        # pipeline client has it): its buffered replies are taken without three coroutine
        # levels each (0.99x the CPU per turn). Any other connection or parser, or one
        # whose parts have moved, is read through the connection as before. Looked up
        # after the send: a reconnect there makes a new reader, and the old one may still
        # hold the unread replies of a batch that failed.
        parser = getattr(connection, "_parser", None)
        reader = getattr(parser, "_reader", None)
        direct = (isinstance(parser, _AsyncHiredisParser) and reader is not None
                  and connection.socket_timeout is None
                  and not connection.health_check_interval
                  and hasattr(parser, "_hiredis_PushNotificationType")
                  and hasattr(parser, "handle_push_response"))
        try:
            for command in commands:
                try:
                    reply = (await _reply(parser, reader) if direct  # type: ignore[arg-type]
                             else await connection.read_response())
                except ResponseError as exc:  # an error reply: the connection is fine
                    replies.append(exc)
                    continue
                callback = callbacks.get(command[0])
                replies.append(reply if callback is None else callback(reply))
        except BaseException:  # a callback failed: the replies after it were not read
            await connection.disconnect(nowait=True)
            raise
        return replies

    async def _load_and_rerun(self, calls: list[_Call]) -> None:
        """The server lost the scripts (restart, failover, SCRIPT FLUSH): load, run again."""
        scripts = {c.script.sha: c.script for c in calls if c.script is not None}
        try:
            for script in scripts.values():
                await self._bounded(self.redis.script_load(script.script), "a script load")
        except Exception as exc:  # handed to the callers, who await these replies
            for call in calls:
                call.answer(exc)
            return
        for call in calls:
            assert call.script is not None
            try:
                call.answer(await self._bounded(self.redis.evalsha(
                    call.script.sha, len(call.keys), *call.keys, *call.args), "a script"))
            except Exception as exc:  # handed to its caller
                call.answer(exc)

    async def _bounded(self, awaitable: Awaitable[Any], what: str) -> Any:
        """``awaitable`` within ``timeout_s`` (if set), else redis-py's ``TimeoutError``:
        every read the flusher makes is bounded, or one silent server stalls every call."""
        if self._timeout_s is None:
            return await awaitable
        try:
            async with asyncio.timeout(self._timeout_s):
                return await awaitable
        except TimeoutError:
            raise RedisTimeoutError(
                f"Redis did not answer {what} within {self._timeout_s} s") from None


async def _reply(parser: _AsyncHiredisParser, reader: hiredis.Reader) -> Any:
    """The next reply, as ``connection.read_response()`` answers it on a connection with
    no per-reply timeout (a batch is bounded as a whole): taken straight from the hiredis
    reader when it holds it whole (a batch's replies mostly arrive in one read), else
    read by the parser, which also hands server pushes to their handler; an error reply
    raised, a failed read a redis-py ``ConnectionError``, as there."""
    reply = reader.gets()
    try:
        if reply is NOT_ENOUGH_DATA:
            reply = await parser.read_response()
        elif (push := parser._hiredis_PushNotificationType) is not None and isinstance(
                reply, push):
            await parser.handle_push_response(reply)
            reply = await parser.read_response()
    except OSError as exc:
        raise RedisConnectionError(f"Error while reading from Redis: {exc.args}") from exc
    if isinstance(reply, (ResponseError, RedisConnectionError)):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]
    return reply


def then(source: asyncio.Future[T], fn: Callable[[T], R | Awaitable[R]]) -> asyncio.Future[R]:
    """A future of ``fn(result)`` once ``source`` has its result, with no task between;
    when ``fn`` answers an awaitable instead (a coroutine for a rare slow path), of what
    that gives, awaited in a task of its own. An error of ``source`` (or one ``fn`` or its
    awaitable raises) is the future's error, a cancellation of ``source`` cancels it, and
    cancelling it cancels ``source`` (a pipelined call not yet sent is then dropped) and
    the awaitable's task."""
    result: asyncio.Future[R] = source.get_loop().create_future()
    follow: list[asyncio.Future[R]] = []  # the awaitable's task, when there is one

    def settled(done: asyncio.Future[T]) -> None:
        if result.done():  # the caller has gone: its source's error is seen, not logged
            _retrieve(done)
            return
        if done.cancelled():
            result.cancel()
            return
        error = done.exception()
        if error is None:
            try:
                value = fn(done.result())
            except Exception as exc:
                error = exc
            else:
                if inspect.isawaitable(value):
                    follow.append(asyncio.ensure_future(value))
                    follow[0].add_done_callback(followed)
                else:
                    result.set_result(value)
                return
        result.set_exception(error)

    def followed(done: asyncio.Future[R]) -> None:
        if result.done():
            _retrieve(done)  # seen: the caller has gone
        elif done.cancelled():
            result.cancel()
        elif (error := done.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(done.result())

    def abandoned(done: asyncio.Future[R]) -> None:
        if done.cancelled():
            source.cancel()
            for task in follow:
                task.cancel()

    source.add_done_callback(settled)
    result.add_done_callback(abandoned)
    return result


async def _converted(call: Callable[[], Awaitable[Any]],
                     convert: Callable[[Any], Any] | None) -> Any:
    reply = await call()
    return reply if convert is None else convert(reply)


async def together(first: Awaitable[Any], *rest: Awaitable[Any],
                   return_exceptions: bool = False) -> list[Any]:
    """``asyncio.gather`` for calls whose Redis commands should share one round trip, with
    one task fewer and without gather's machinery: each coroutine of ``rest`` starts in a
    task of its own (a future, such as a pipelined call's, is awaited as it is), then
    ``first`` runs in the caller's task; every call queues its command before the batch
    leaves, as with gather. Measured side by side: see bench/README.md.

    As gather: the results in order; the first error raised (the others left to run,
    their errors retrieved), or, with ``return_exceptions``, every error in its place (a
    call's own cancellation included); cancelling the caller cancels the calls still
    running and waits for them before the cancellation goes on. Unlike gather, an error of
    one of ``rest`` is raised once ``first`` has finished (it runs inline)."""
    cancels = _cancel_requests()  # the caller's, before: a later one is a cancel of it
    tasks = [asyncio.ensure_future(awaitable) for awaitable in rest]
    results: list[Any] = []
    try:
        for call in (first, *tasks):
            try:
                results.append(await call)
            except asyncio.CancelledError as exc:
                if not return_exceptions or _cancel_requests() > cancels:
                    raise
                results.append(exc)
            except Exception as exc:
                if not return_exceptions or _cancel_requests() > cancels:
                    raise  # (a call made the caller's cancel an error: still a cancel)
                results.append(exc)
    except BaseException as exc:
        if _cancel_requests() <= cancels:  # an error (or a call's own cancellation):
            _retrieve_later(tasks)  # the others are left to run
            raise
        await _cancel_and_wait(tasks)  # the caller is cancelled: so are the calls
        if return_exceptions and not isinstance(exc, asyncio.CancelledError):
            raise asyncio.CancelledError from exc
        raise
    return results


def _cancel_requests() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


async def _cancel_and_wait(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel the calls still running and wait until they have unwound (again if the
    caller is cancelled once more meanwhile), their errors retrieved."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            for task in pending:
                task.cancel()
    _retrieve_later(tasks)


def _retrieve_later(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """The caller raises another error: these calls' own errors are seen, not logged."""
    for task in tasks:
        task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's (or a future's) error as seen: its caller has raised another, or
    has gone."""
    if not task.cancelled():
        task.exception()


async def _reopen_if_closed(connection: AbstractConnection, *, probe: bool) -> None:
    """Disconnect a kept connection that the server closed while it sat idle (a restart,
    a failover, an idle timeout), or that holds bytes nobody asked for: the send reopens
    it. A kept connection never goes back through the pool's own check on checkout.

    That check sees a close only once the event loop has read it; a process that was
    frozen meanwhile (a Lambda between invocations) has not. So with ``probe`` (a long
    idle) a connection that looks open answers a PING first, or is disconnected."""
    try:
        stale = connection.is_connected and await connection.can_read()
        if probe and connection.is_connected and not stale:
            async with asyncio.timeout(PROBE_TIMEOUT_S):  # a dropped peer: reopen, soon
                await connection.send_command("PING", check_health=False)
                # Refused (an ACL without PING) is an answer too: alive, its reply read.
                with contextlib.suppress(ResponseError):
                    await connection.read_response()
    except (RedisConnectionError, OSError, TimeoutError):
        stale = True
    if stale:
        await connection.disconnect(nowait=True)
