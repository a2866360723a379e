"""A lean HTTP/1.1 client for one TGI endpoint: asyncio protocol + httptools' C parser, keep-alive pool.

Why not httpx: a streamed TGI answer is one HTTP chunk per token, and httpx/httpcore/h11/anyio spent 29 % of the
gateway's CPU on them (bench/PERF-NOTES.md). Here a TCP read is parsed in ``data_received`` (all the chunks it
holds at once, in C) and the reader is woken once per read, not once per chunk; a request is one ``write``.

Only what talking to TGI needs: ``http``/``https``, requests with a ``bytes`` body, responses with a
``Content-Length``, chunked or close-delimited body, keep-alive. Errors are the classes below; ``client.py``
maps them to the gateway's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl as ssl_module
import time
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectFailed", "Disconnected", "HTTPPool", "PoolTimeout", "ReadTimeout", "Response", "TransportError"]


class TransportError(Exception):
    """Talking to the server failed."""


class ConnectFailed(TransportError):
    pass


class PoolTimeout(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class Disconnected(TransportError):
    """The connection broke (reset, closed, or bytes that are not HTTP). ``answered``: the status line came."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class _Connection(asyncio.Protocol):
    """One TCP connection; the current response's state lives here (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.lost_reason: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._whole = False  # the waiter wants the whole answer: wake it at the end, not at every read
        self._timeout: float | None = None  # of the current wait
        self._since = 0.0  # the current wait's start, or the last bytes received during it
        self._watchdog: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.headers_done = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.complete = False
        self.keep_alive = False
        self.broken: str | None = None
        self.received = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.broken = "unexpected protocol upgrade"
        except httptools.HttpParserError as exc:
            self.broken = f"bad HTTP from the server: {exc}"
        if self._waiter is not None:
            if self._whole and not self.complete and self.broken is None and self.headers_done:
                self._since = self.loop.time()  # bytes came: the idle timeout starts again
            else:
                self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost, self.lost_reason = True, exc
        if self.headers_done and not self.complete and self._close_delimited():
            self.complete = True  # a body without length or chunking ends with the connection
        self._wake()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # read here: the parser forgets it once reset
        self.complete = True

    # -- reading ------------------------------------------------------------------------------

    def _close_delimited(self) -> bool:
        return b"content-length" not in self.headers and b"transfer-encoding" not in self.headers

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None, *, whole: bool = False) -> None:
        """Until something new was parsed (with ``whole``: until the answer is complete), or the connection was
        lost; ``ReadTimeout`` when the server sends nothing for ``timeout`` seconds.

        One watchdog timer serves every wait of the connection: it is armed when none is, and when it fires
        before the timeout is reached (bytes came, or a new wait began) it is armed again for the rest. Arming
        and cancelling a loop timer for every read costs more than the read's own work."""
        if self.lost:
            return
        waiter = self._waiter = self.loop.create_future()
        self._whole, self._timeout = whole, timeout
        if timeout is not None:
            self._since = now = self.loop.time()
            watchdog = self._watchdog
            if watchdog is None or watchdog.when() > now + timeout:  # none, or one for a longer timeout
                if watchdog is not None:
                    watchdog.cancel()
                self._watchdog = self.loop.call_at(now + timeout, self._watch)
        try:
            await waiter
        finally:
            self._waiter = None

    def _watch(self) -> None:
        self._watchdog = None
        waiter, timeout = self._waiter, self._timeout
        if waiter is None or waiter.done() or timeout is None:
            return  # no wait in progress: the next one arms a new watchdog
        due = self._since + timeout
        if self.loop.time() >= due:
            waiter.set_exception(ReadTimeout("the server sent nothing in time"))
        else:
            self._watchdog = self.loop.call_at(due, self._watch)

    def failure(self) -> Disconnected | None:
        if self.broken is not None:
            return Disconnected(self.broken, answered=self.headers_done)
        if self.lost and not self.complete:
            reason = f": {self.lost_reason!r}" if self.lost_reason else ""
            what = "before the end of the answer" if self.headers_done else "before answering"
            return Disconnected(f"the server closed the connection {what}{reason}", answered=self.headers_done)
        return None

    def close(self) -> None:
        """Close now: the server sees the end at once (a generation in flight is cancelled), not at the event
        loop's next turn."""
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, TypeError):  # uvloop: no shutdown(); abort() is prompt there
                    sock.shutdown(socket.SHUT_RDWR)
            transport.abort()


class Response:
    """A response whose status line and headers came; the body is read with :meth:`next_chunk`. Give it back
    with :meth:`release` (the connection is pooled when the body was read through) or :meth:`close`."""

    __slots__ = ("_conn", "_pool", "status", "headers", "_done")

    def __init__(self, pool: HTTPPool, conn: _Connection) -> None:
        self._pool, self._conn = pool, conn
        self.status, self.headers = conn.status, conn.headers
        self._done = False

    @property
    def buffered(self) -> bool:
        """Whether :meth:`next_chunk` answers without waiting for the network."""
        conn = self._conn
        return bool(conn.chunks) or conn.complete or conn.lost or conn.broken is not None

    async def next_chunk(self, timeout: float | None, *, whole: bool = False) -> bytes | None:
        """The next piece of the body, ``None`` at its end. ``whole``: when the next piece is not here yet, wait
        for the rest of the answer at once (one wake-up, not one per read; ``timeout`` is still per read)."""
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.chunks.popleft()
            if conn.broken is not None:
                raise conn.failure()
            if conn.complete:
                return None
            failure = conn.failure()
            if failure is not None:
                raise failure
            await conn.wait(timeout, whole=whole)

    async def read(self, timeout: float | None, limit: int | None = None) -> bytes:
        """The rest of the body (at most about ``limit`` bytes: then what was read so far)."""
        parts = []
        size = 0
        while (chunk := await self.next_chunk(timeout, whole=True)) is not None:
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                break
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response: the connection goes back to the pool if its answer was read through."""
        if not self._done:
            self._done = True
            conn = self._conn
            reusable = conn.complete and not conn.chunks and not conn.lost and conn.broken is None and conn.keep_alive
            self._pool._give_back(conn, reusable)

    close = release


class HTTPPool:
    """Keep-alive connections to one ``http(s)://host:port``: at most ``max_connections`` at once (more wait up to
    ``pool_timeout``), at most ``max_keepalive`` idle ones, each idle at most ``keepalive_expiry`` seconds."""

    def __init__(self, base_url: str, *, connect_timeout: float, pool_timeout: float, max_connections: int,
                 max_keepalive: int, keepalive_expiry: float, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port:
            netloc += f":{parts.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head_tail = f"host: {netloc}\r\n{extra}".encode("latin-1")
        self._connect_timeout, self._pool_timeout = connect_timeout, pool_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._max_keepalive, self._expiry = max_keepalive, keepalive_expiry
        self._idle: list[_Connection] = []
        self._ssl: ssl_module.SSLContext | None = None
        self._closed = False

    async def request(self, method: str, path: str, body: bytes | None = None, *,
                      content_type: bytes = b"application/json", timeout: float | None) -> Response:
        """Send a request; returns when the status line and headers came (``timeout``: seconds to wait for them)."""
        head = b"%s %s HTTP/1.1\r\n%s" % (method.encode(), (self._prefix + path).encode(), self._head_tail)
        if body is not None:
            head += b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(body))
        data = head + b"\r\n" + (body or b"")
        await self._acquire_slot()
        try:
            for attempt in (0, 1):
                conn, reused = await self._connection()
                conn.transport.write(data)
                try:
                    while not conn.headers_done:
                        failure = conn.failure()
                        if failure is not None:
                            raise failure
                        await conn.wait(timeout)
                    return Response(self, conn)
                except Disconnected:
                    conn.close()
                    if attempt or not reused or conn.received:
                        raise
                    # a pooled connection the server had closed meanwhile: it never saw the request, send it anew
                except BaseException:
                    conn.close()
                    raise
        except BaseException:
            self._slots.release()
            raise
        raise AssertionError("unreachable")

    async def _acquire_slot(self) -> None:
        if self._closed:
            raise ConnectFailed("the client is closed")
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self._pool_timeout)
        except TimeoutError:
            raise PoolTimeout("no free connection in time") from None

    async def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and not conn.transport.is_closing() and now - conn.idle_since < self._expiry:
                conn._reset()
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        ssl = None
        if self._tls:
            if self._ssl is None:
                self._ssl = ssl_module.create_default_context()
            ssl = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), self._host, self._port, ssl=ssl)
        except (OSError, TimeoutError, ssl_module.SSLError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        return conn, False

    def _give_back(self, conn: _Connection, reusable: bool) -> None:
        self._slots.release()
        if reusable and not self._closed and len(self._idle) < self._max_keepalive:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
