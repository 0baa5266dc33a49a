"""Replies a real Redis gives only in rare states, read by the auto-pipeline's direct path
(straight from redis-py's hiredis reader) exactly as redis-py's own path reads them.

A real server answers ``-LOADING`` only while it loads its dataset after a restart, and
resets a connection only when it dies mid-reply: neither can be brought about on demand.
So a small RESP server on a real socket plays them (a stand-in for the server, not for
our code), and each case runs on the runtime's pipeline client twice: as it is (the
direct path) and with redis-py's own Python parser (every reply through
``connection.read_response()``). Both must answer every call alike.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis._parsers import _AsyncRESP2Parser
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

from memory.pipelining import AutoPipeline
from memory.redis_client import connect_pipeline_client

LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"
Answer = Callable[[list[bytes]], bytes]  # a command's reply; empty: reset the connection


class ScriptedRedis:
    """A RESP2 server: each command's reply is ``answer(words)``; commands are counted."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.commands: list[list[bytes]] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                words = await _read_command(reader)
                if words is None:
                    return
                self.commands.append(words)
                reply = self._answer(words)
                if not reply:  # a reset (RST): the client's read fails, no EOF
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    header = await reader.readline()
    if not header.startswith(b"*"):  # closed, or not a RESP command: the connection ends
        return None                  # (a test then fails on its outcome, not a timeout)
    words = []
    for _ in range(int(header[1:])):
        size = int((await reader.readline())[1:])
        words.append((await reader.readexactly(size + 2))[:-2])
    return words


def ordinary(words: list[bytes]) -> bytes:
    """What a server answers to the commands of a connection's set-up and to ECHO."""
    if words[0].upper() == b"ECHO":
        return b"$%d\r\n%s\r\n" % (len(words[1]), words[1])
    return b"+OK\r\n"  # CLIENT SETINFO, SELECT...


@asynccontextmanager
async def scripted(answer: Answer) -> AsyncIterator[tuple[ScriptedRedis, str]]:
    server = ScriptedRedis(answer)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"redis://127.0.0.1:{port}/0?protocol=2"
    finally:
        listener.close()
        await listener.wait_closed()


async def batches(url: str, direct: bool, *sent: tuple[str, ...]) -> list[list[Any]]:
    """Each batch's outcomes, one batch after another on one auto-pipeline of the
    runtime's pipeline client (``direct``: as it is; else with redis-py's Python parser);
    a word ``*`` is the scripted ``LOADME`` command, any other an ``ECHO`` of it; an
    exception is given by its type."""
    options = {} if direct else {"parser_class": _AsyncRESP2Parser}
    client = connect_pipeline_client(url, **options)
    assert client is not None
    results = []
    try:
        pipeline = AutoPipeline(client, hold_connection=True, timeout_s=5.0)
        for words in sent:
            answers = await asyncio.gather(
                *(pipeline.command("LOADME") if w == "*" else pipeline.command("ECHO", w)
                  for w in words), return_exceptions=True)
            results.append([type(a) if isinstance(a, BaseException) else a for a in answers])
    finally:
        await client.aclose()
    return results


def loadme_answered(first: bytes, times: int, then: bytes) -> Answer:
    """``LOADME`` answered ``first`` for its first ``times`` asks (empty: the connection
    reset), then ``then``; every other command as a server answers it."""
    left = [times]

    def answer(words: list[bytes]) -> bytes:
        if words[0] != b"LOADME":
            return ordinary(words)
        if left[0]:
            left[0] -= 1
            return first
        return then

    return answer


BOTH_PATHS = pytest.mark.parametrize("direct", [True, False],
                                     ids=["from the reader", "via the connection"])


@BOTH_PATHS
async def test_a_loading_server_fails_the_whole_batch_then_serves_the_next(
        direct: bool, direct_reads: list[int]) -> None:
    """``-LOADING`` is a connection-level error in redis-py (the server is not ready), not
    one command's error: every call of the batch fails with ``BusyLoadingError``, the one
    whose reply came first too (a batch fails as one, as on any broken connection). The
    connection is dropped with whatever it had not read, so the next batch, the server
    ready, gets exactly its own replies on a new one."""
    async with scripted(loadme_answered(LOADING, 1, b"+ready\r\n")) as (server, url):
        got = await batches(url, direct, ("a", "*", "b"), ("c", "*", "d"))
    assert got == [[BusyLoadingError] * 3, [b"c", b"ready", b"d"]]
    assert server.connections == 2
    assert (direct_reads[0] > 0) is direct


@BOTH_PATHS
async def test_an_array_led_by_a_connection_error_fails_the_batch_as_that_error(
        direct: bool, direct_reads: list[int]) -> None:
    """An array whose first element is a connection-level error (``*1`` then
    ``-LOADING``) is that error, raised as redis-py's parser raises it, not a reply."""
    async with scripted(loadme_answered(b"*1\r\n" + LOADING, 1,
                                        b"*1\r\n$5\r\nready\r\n")) as (server, url):
        got = await batches(url, direct, ("a", "*", "b"), ("c", "*", "d"))
    assert got == [[BusyLoadingError] * 3, [b"c", [b"ready"], b"d"]]
    assert server.connections == 2
    assert (direct_reads[0] > 0) is direct


@BOTH_PATHS
async def test_a_connection_reset_mid_batch_is_a_connection_error(
        direct: bool, direct_reads: list[int]) -> None:
    """A server that resets the connection (RST) after the batch's first reply: the
    socket's error (an ``OSError``) is redis-py's ``ConnectionError`` for every call of
    the batch; the next batch goes out on a new connection."""
    async with scripted(loadme_answered(b"", 1, b"+ready\r\n")) as (server, url):
        got = await batches(url, direct, ("a", "*", "b"), ("c", "*", "d"))
    assert got == [[RedisConnectionError] * 3, [b"c", b"ready", b"d"]]
    assert server.connections == 2
    assert (direct_reads[0] > 0) is direct
