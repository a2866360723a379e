"""A small asyncio HTTP/1.1 server connection (keep-alive, chunked bodies, TCP reset)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

from .common import APPLICATION_JSON, ROUTER, TEXT_PLAIN

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Entity", 424: "Failed Dependency", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
MAX_HEAD = 65536
HARD_BODY_CAP = 64 * 1024 * 1024


class Request:
    __slots__ = ("method", "path", "headers", "body", "keep_alive", "too_large")


class Connection(asyncio.Protocol):
    """One client connection: a small HTTP/1.1 server with keep-alive, requests served one after another.

    ``connection_lost`` wakes every wait at once, so a client that goes away mid-stream is seen at once even
    while the next token is still being waited for.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.transport = None
        self.buf = bytearray()
        self.closed = False
        self.must_close = False
        self._waiters: set = set()
        self._paused = False
        self.last_write = 0.0

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_event_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.app.connections += 1
        self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self):
        return None  # the client closed its side: treat as gone

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.app.connections -= 1
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # waiting
    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _wait(self, timeout: float | None = None) -> None:
        waiter = self.loop.create_future()
        self._waiters.add(waiter)
        handle = self.loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if handle is not None:
                handle.cancel()

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, returning early when the client goes away."""
        deadline = self.loop.time() + delay
        while not self.closed:
            left = deadline - self.loop.time()
            if left <= 0:
                return
            await self._wait(left)

    async def drain(self) -> None:
        while self._paused and not self.closed:
            await self._wait()

    # reading
    async def _serve(self) -> None:
        try:
            while not self.closed:
                request = await self._read_request()
                if request is None:
                    break
                await self.app.handle(self, request)
                if not request.keep_alive or self.must_close:
                    break
        except Exception as exc:  # a bug here must not kill the server
            self.app.log(f"connection error: {exc!r}", level="ERROR", target=ROUTER)
        if not self.closed:
            self.transport.close()

    async def _read_request(self):
        while True:
            start = len(self.buf) - len(self.buf.lstrip(b"\r\n"))
            if start:
                del self.buf[:start]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > MAX_HEAD:
                self.respond(431, close=True)
                return None
            if self.closed:
                return None
            await self._wait()
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.respond(400, close=True)
            return None
        request = Request()
        request.method, request.path = parts[0], parts[1].split("?", 1)[0]
        request.headers = headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self.respond(400, close=True)
                return None
            name = name.strip().lower()
            headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        connection = headers.get("connection", "").lower()
        request.keep_alive = ("close" not in connection) if parts[2] == "HTTP/1.1" else ("keep-alive" in connection)
        if headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await self._read_body(request)

    async def _read_body(self, request):
        limit = self.app.limits.payload_limit
        request.too_large = False
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
            if body is None:
                return None
        else:
            try:
                size = int(request.headers.get("content-length", "0"))
            except ValueError:
                size = -1
            if size < 0:
                self.respond(400, close=True)
                return None
            if size > HARD_BODY_CAP:
                self.respond(413, b"Failed to buffer the request body: length limit exceeded",
                             content_type=TEXT_PLAIN, close=True)
                return None
            while len(self.buf) < size:
                if self.closed:
                    return None
                await self._wait()
            body = bytes(self.buf[:size])
            del self.buf[:size]
        request.too_large = len(body) > limit
        request.body = body
        return request

    async def _read_chunked(self):
        body = bytearray()
        while True:
            while b"\r\n" not in self.buf:
                if self.closed:
                    return None
                await self._wait()
            line_end = self.buf.find(b"\r\n")
            try:
                size = int(bytes(self.buf[:line_end]).split(b";")[0], 16)
            except ValueError:
                self.respond(400, close=True)
                return None
            while len(self.buf) < line_end + 2 + size + 2:
                if self.closed:
                    return None
                await self._wait()
            if size == 0:
                trailer_end = self.buf.find(b"\r\n", line_end + 2)
                del self.buf[:trailer_end + 2]
                return bytes(body)
            body += self.buf[line_end + 2:line_end + 2 + size]
            del self.buf[:line_end + 2 + size + 2]
            if len(body) > HARD_BODY_CAP:
                self.respond(413, close=True)
                return None

    # writing
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)
            self.last_write = self.loop.time()

    def respond(self, status: int, body: bytes = b"", *, content_type: str | None = None,
                headers=(), close: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        if content_type:
            lines.append("content-type: " + content_type)
        lines.append(f"content-length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if close:
            self.must_close = True
            lines.append("connection: close")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def respond_json(self, status: int, obj, headers=()) -> None:
        self.respond(status, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                     content_type=APPLICATION_JSON, headers=headers)

    def start_chunked(self, status: int, headers) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append("transfer-encoding: chunked")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def write_chunk(self, data: bytes, *, last: bool = False) -> None:
        self.write(b"%x\r\n%s\r\n%s" % (len(data), data, b"0\r\n\r\n" if last else b""))

    def end_chunked(self) -> None:
        self.write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed server would."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.must_close = True
        self.transport.abort()


def _resolve(future) -> None:
    if not future.done():
        future.set_result(None)
