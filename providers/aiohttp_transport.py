"""The HTTP transport under the SDK clients: httpx2's transport interface over aiohttp.

The ``openai`` and ``anthropic`` SDKs speak httpx2 and accept any ``httpx2.AsyncClient``;
aiohttp is the faster HTTP/1.1 client on our event loop. The SDKs ship such a transport
(``DefaultAioHttpClient``); ours differs where a gateway's hot path cares:

* **The streamed body is reachable without httpx2's per-chunk layers.** Every response
  carries its body (over the aiohttp response) in its ``extensions`` (httpx2's documented
  place for transport-specific data, as httpcore's ``network_stream``).
  :func:`body_chunks` reads it straight from aiohttp: each chunk resumes one generator
  instead of five (the transport's, httpx2's bound stream, ``aiter_raw``, ``aiter_bytes``
  and aiohttp's chunk iterator), about 8 µs of CPU per streamed delta on the benchmark
  machine (``bench/README.md``).
* **One timer per streamed body, not one per read.** The read timeout bounds each wait
  for the next bytes. aiohttp enforces it by cancelling and re-arming a loop timer on every
  network read: about 3 % of a turn's CPU (20 deltas), measured side by side. A body read
  through :func:`body_chunks` (or :func:`watched_body`, as the Bedrock provider reads the
  body under aiobotocore's event stream) turns that timer off and is watched by a
  :class:`StallWatchdog` instead: one timer per body, which fails the body when a whole
  period passes with no new bytes and nothing left unread. A stall ends the body between
  one and two read timeouts after its last bytes: a backstop's precision (the router's
  clocks are the exact ones). The request and its response headers keep aiohttp's timer,
  and so does the wait for the first network read after them (the timer armed by the
  headers' read is not cancelled; the next read cancels it and arms none).
* **aiohttp decodes the body** (gzip, deflate, and whatever else its installed codecs
  support, advertised by its own ``Accept-Encoding``) and the response reaches httpx2
  without ``Content-Encoding``: the bytes are the same whichever way they are read.
* **aiohttp errors become httpx2's** (connect, read, timeout), so the SDKs raise their
  typed connection and timeout errors; :func:`body_chunks`' own reads map theirs through
  :func:`providers.transport.map_transport_errors`.
* One ``ClientTimeout`` per distinct timeout setting (the SDKs send the same one on every
  request), not one per request; the proxy settings of the environment (``HTTPS_PROXY``,
  ``NO_PROXY``...) are read once per origin, not on every request (aiohttp's
  ``trust_env`` asks a worker thread twice per request).

Closing a response releases its connection: aiohttp keeps it for reuse only when the body
was read to the end, so a stream abandoned midway closes its connection. A provider that has
read its protocol's last event says so (:func:`body_answered`): the body's end (the chunked
terminator, which may come in a later read than the last event) is then read in the
background, within bounds, and the connection kept for the next request instead of paying
a new connection (and TLS handshake) for it.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2

BODY_EXTENSION = "chatgate.aiohttp_body"
"""``response.extensions`` key of the body a response was sent with (:func:`body_chunks`
finds it there whichever way httpx2 wrapped the response's stream)."""
MAX_UNREAD_CHECKS = 10  # a reader idle this many read timeouts is taken for gone
# An answered body's rest (its terminator, normally under way) is read for reuse within:
REST_WAIT_S = 1.0
REST_MAX_BYTES = 64 * 1024
MAX_FINISHING = 64  # bodies read so at once; beyond, a connection is closed as before

MAX_REMEMBERED_URLS = 256  # parsed endpoint URLs an SDK client keeps
MAX_UPSTREAM_CONNECTIONS = 1000  # a provider's connections at once: streams in flight
_DROPPED_REQUEST_HEADERS = frozenset({b"accept-encoding", b"content-length", b"host",
                                      b"transfer-encoding"})
_AUTO_REQUEST_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_DROPPED_RESPONSE_HEADERS = frozenset({b"content-encoding", b"content-length"})


@contextmanager
def map_aiohttp_errors() -> Iterator[None]:
    """aiohttp's errors as httpx2's (the most specific match first)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # sock_connect, or waiting for the pool
        raise httpx2.ConnectTimeout(str(exc) or "connect timed out") from exc
    except aiohttp.ServerTimeoutError as exc:  # sock_read
        raise httpx2.ReadTimeout(str(exc) or "read timed out") from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS
        raise httpx2.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:  # the body broke off mid-stream
        raise httpx2.ReadError(str(exc)) from exc
    except aiohttp.ClientConnectionError as exc:  # reset, disconnected
        raise httpx2.ReadError(str(exc) or "connection lost") from exc
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx2.TransportError(str(exc) or type(exc).__name__) from exc


class _Body(httpx2.AsyncByteStream):
    """The httpx2 view of an aiohttp body (iterated when a caller reads through httpx2),
    and its straight reads (:meth:`chunks`, for :func:`body_chunks`)."""

    def __init__(self, response: aiohttp.ClientResponse, read_timeout_s: float | None,
                 finishing: set[asyncio.Task[None]]) -> None:
        self._response = response
        self._read_timeout_s = read_timeout_s
        self._watchdog: StallWatchdog | None = None
        self._answered = False
        self._finishing = finishing

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_errors():
            async for chunk in self._response.content.iter_any():
                yield chunk

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (:func:`watched_body`)."""
        chunks = watched_body(self._response, self._read_timeout_s)
        if isinstance(chunks, StallWatchdog):
            self._watchdog = chunks
        return chunks

    def answered(self) -> None:
        """The protocol's last event has been read: what is left of the body is its framing
        (the chunked terminator), which decides whether the connection can be reused."""
        self._answered = True

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
        content = self._response.content
        if (self._answered and not content.is_eof() and content.exception() is None
                and len(self._finishing) < MAX_FINISHING):
            # Released now, the connection would be closed (aiohttp keeps only a connection
            # whose body was read to its end): its last bytes are read in the background.
            task = asyncio.create_task(_read_rest_then_release(self._response))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            return
        self._response.release()


async def _read_rest_then_release(response: aiohttp.ClientResponse) -> None:
    """Read an answered body to its end, within bounds, then release its connection for
    reuse; a body that goes on past them (or fails) closes it."""
    content, left = response.content, REST_MAX_BYTES
    try:
        async with asyncio.timeout(REST_WAIT_S):
            while left > 0 and (chunk := await content.readany()):
                left -= len(chunk)
    except Exception:  # whatever went wrong, the connection is closed below
        pass
    finally:  # cancelled (the transport closing) included
        if content.is_eof() and content.exception() is None:
            response.release()
        else:
            response.close()


class StallWatchdog:
    """Iterates an aiohttp body, failing it with aiohttp's read timeout error when the
    upstream stalls: a check every ``timeout_s`` that finds no new bytes since the last
    check, with every byte received already handed out (a reader slower than the upstream
    is never failed: it has bytes left to read). One timer per body; per read, a count.

    A reader that has left bytes unread for :data:`MAX_UNREAD_CHECKS` checks in a row is
    taken for gone (a response never closed): the watchdog stops, rather than re-arm for
    as long as the abandoned body lives."""

    __slots__ = ("_content", "_handle", "_idle_checks", "_loop", "_read", "_read_at_check",
                 "_seen", "_timeout_s")

    def __init__(self, content: aiohttp.StreamReader, timeout_s: float) -> None:
        self._content = content
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._read = 0  # bytes handed out
        self._seen = content.total_bytes  # bytes received at the last check
        self._read_at_check = 0  # bytes handed out at the last check
        self._idle_checks = 0  # checks in a row that found bytes unread and none taken
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(timeout_s,
                                                                          self._check)

    def __aiter__(self) -> StallWatchdog:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._content.readany()
        if not chunk:
            self.close()
            raise StopAsyncIteration
        self._read += len(chunk)
        return chunk

    def close(self) -> None:
        """Stop checking (the body ended, or its response was closed). Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def armed(self) -> bool:
        """Its timer is set (it stops at the body's end, its failure, or :meth:`close`)."""
        return self._handle is not None

    def _check(self) -> None:
        self._handle = None
        content = self._content
        if content.at_eof() or content.exception() is not None:
            return  # nothing more will arrive
        received, read = content.total_bytes, self._read
        if received == self._seen and read >= received:
            content.set_exception(aiohttp.ServerTimeoutError(
                f"no data from the upstream for {self._timeout_s} s"))
            return
        if read < received and read == self._read_at_check:
            self._idle_checks += 1
            if self._idle_checks >= MAX_UNREAD_CHECKS:
                return  # the reader is gone (or as good as): stop watching for it
        else:
            self._idle_checks = 0
        self._seen, self._read_at_check = received, read
        self._handle = self._loop.call_later(self._timeout_s, self._check)


def watched_body(response: aiohttp.ClientResponse, read_timeout_s: float | None
                 ) -> AsyncIterator[bytes]:
    """``response``'s body as it arrives, under a :class:`StallWatchdog` instead of
    aiohttp's per-read timer, which is cancelled and scheduled anew for every read (none
    when there is no read timeout or nothing left to wait for). Close the watchdog, if it
    is one, when done with the body."""
    connection = response.connection
    if read_timeout_s is None or connection is None or connection.protocol is None:
        return response.content.iter_any()
    connection.protocol.read_timeout = None  # the next request on it sets its own
    return StallWatchdog(response.content, read_timeout_s)


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """One aiohttp session (opened on first use, inside the running loop). Idle upstream
    connections are kept ``keepalive_s`` (aiohttp's default, 15 s): well inside the idle
    timeouts of the providers' front ends, so a kept connection is rarely found closed (and
    a failed connect before the first token is retried by the router)."""

    def __init__(self, *, max_connections: int = MAX_UPSTREAM_CONNECTIONS,
                 keepalive_s: float = 15.0,
                 ssl_context: ssl.SSLContext | bool = True) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}
        # Answered bodies whose last bytes are being read before their connection's reuse.
        self.finishing: set[asyncio.Task[None]] = set()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections,
                                             keepalive_timeout=self._keepalive_s,
                                             ssl=self._ssl)
            # No cookie jar: a provider's cookies must never go from one tenant's request
            # to the next (aiohttp's default jar would keep and resend them).
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def _timeout(self, settings: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (settings.get("connect"), settings.get("read"), settings.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read, connect=pool)
        return timeout

    def _proxy(self, url: httpx2.URL) -> str | None:
        origin = (url.scheme, url.host)
        if origin not in self._proxies:
            self._proxies[origin] = env_proxy(url.scheme, url.host)
        return self._proxies[origin]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._open()
        encoding = request.headers.encoding  # as multi_items() decodes, looked up once
        headers = [(k.decode(encoding), v.decode(encoding)) for k, v in request.headers.raw
                   if k.lower() not in _DROPPED_REQUEST_HEADERS]
        try:
            data: Any = request.content or None
        except httpx2.RequestNotRead:  # a streamed upload: aiohttp sends it chunked
            data = request.stream
        timeout = self._timeout(request.extensions.get("timeout", {}))
        with map_aiohttp_errors():
            response = await session.request(
                request.method, str(request.url), headers=headers, data=data,
                allow_redirects=False, compress=None, proxy=self._proxy(request.url),
                timeout=timeout,
                server_hostname=request.extensions.get("sni_hostname"))
        body = _Body(response, timeout.sock_read, self.finishing)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1", BODY_EXTENSION: body}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx2.Response(
            status_code=response.status,
            headers=[(k, v) for k, v in response.raw_headers
                     if k.lower() not in _DROPPED_RESPONSE_HEADERS],
            stream=body, request=request, extensions=extensions)

    async def aclose(self) -> None:
        finishing = list(self.finishing)
        for task in finishing:  # each closes its connection
            task.cancel()
        if finishing:
            await asyncio.wait(finishing)
        if self._session is not None:
            await self._session.close()
            self._session = None


def env_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment names for ``scheme://host`` (None: connect directly)."""
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(host):
        return None
    return proxies.get(scheme) or proxies.get("all")


class SDKClient(httpx2.AsyncClient):
    """httpx2's client for an SDK, sending straight to its one transport.

    The SDKs build every request themselves (absolute URL, headers, auth header, timeout)
    and want no redirects; what httpx2's client adds on top costs CPU on every request:
    merging client-level URL, params, headers and cookies into the request, and, when
    sending, auth flows, redirect handling, event hooks and a cookie jar (which would even
    carry a provider's cookies from one tenant's request to the next). So ``build_request``
    takes the SDK's request as it is (its URL parsed once per endpoint), and ``send`` hands
    it to the transport. Anything else (a relative URL, params, cookies, form data, an
    explicit ``auth``) still goes through httpx2's own code."""

    def __init__(self, transport: AiohttpTransport, timeout: httpx2.Timeout) -> None:
        super().__init__(transport=transport, timeout=timeout, follow_redirects=False)
        self._direct = transport
        self._urls: dict[str, httpx2.URL] = {}

    def build_request(self, method: str, url: httpx2.URL | str, *, content: Any = None,
                      data: Any = None, files: Any = None, json: Any = None,
                      params: Any = None, headers: Any = None, cookies: Any = None,
                      timeout: Any = httpx2.USE_CLIENT_DEFAULT,
                      extensions: Any = None) -> httpx2.Request:
        parsed = self._urls.get(url) if isinstance(url, str) else None
        if parsed is None:
            parsed = httpx2.URL(url)
        plain = (data is None and files is None and json is None and not params
                 and not cookies and timeout is not httpx2.USE_CLIENT_DEFAULT
                 and parsed.is_absolute_url)
        if not plain:
            return super().build_request(
                method, url, content=content, data=data, files=files, json=json,
                params=params, headers=headers, cookies=cookies, timeout=timeout,
                extensions=extensions)
        if isinstance(url, str) and len(self._urls) < MAX_REMEMBERED_URLS:
            self._urls[url] = parsed
        merged = dict(extensions) if extensions else {}
        if "timeout" not in merged:  # the SDKs pass a Timeout: no copy of it is needed
            merged["timeout"] = (timeout if isinstance(timeout, httpx2.Timeout)
                                 else httpx2.Timeout(timeout)).as_dict()
        if isinstance(content, bytes) and isinstance(headers, list) and not any(
                k.lower() in _AUTO_REQUEST_HEADERS for k, _ in headers):
            # What httpx2's Request(content=...) makes of it, its headers normalized once
            # instead of twice: Host first, the given headers, then Content-Length.
            request = httpx2.Request(
                method, parsed, extensions=merged, stream=httpx2.ByteStream(content),
                headers=[("Host", parsed.netloc.decode("ascii")), *headers,
                         ("Content-Length", str(len(content)))])
            request._content = content  # as Request.read() would set it
            return request
        return httpx2.Request(method, parsed, content=content, headers=headers,
                              extensions=merged)

    async def send(self, request: httpx2.Request, *, stream: bool = False,
                   auth: Any = httpx2.USE_CLIENT_DEFAULT,
                   follow_redirects: Any = httpx2.USE_CLIENT_DEFAULT) -> httpx2.Response:
        if auth is not httpx2.USE_CLIENT_DEFAULT and auth is not None:
            return await super().send(request, stream=stream, auth=auth,
                                      follow_redirects=follow_redirects)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if "timeout" not in request.extensions:  # the SDKs always set one
            request.extensions["timeout"] = self.timeout.as_dict()
        response = await self._direct.handle_async_request(request)
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response


def sdk_http_client(timeout: httpx2.Timeout, **transport: Any) -> httpx2.AsyncClient:
    """The ``http_client`` to hand an SDK: :class:`SDKClient` over :class:`AiohttpTransport`."""
    return SDKClient(AiohttpTransport(**transport), timeout)


def body_answered(response: httpx2.Response) -> None:
    """Say that the protocol's last event of ``response`` has been read (``[DONE]``,
    ``message_stop``): closing it then reads the body's end before releasing the connection,
    so that it is reused, instead of closing it as an abandoned body's."""
    body = response.extensions.get(BODY_EXTENSION)
    if isinstance(body, _Body):
        body.answered()


def body_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The response body as it arrives: straight from aiohttp when our transport sent it
    (errors are aiohttp's then; :func:`providers.transport.map_transport_errors` maps
    both kinds), else through httpx2. Close the response when done (``aclose``): that
    stops the body's watchdog and releases the connection."""
    body = response.extensions.get(BODY_EXTENSION)
    if isinstance(body, _Body):
        return body.chunks()
    return response.aiter_bytes()
