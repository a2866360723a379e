"""A small closed-loop HTTP/1.1 load generator on raw asyncio sockets.

Each worker holds one keep-alive connection and sends the same pre-encoded request again as soon as the
previous answer has been read to its end (``Content-Length`` or chunked). Per request it records the
start, the arrival of the first token (the first read block holding ``first_marker``) and the end. It does
no JSON work at all, so its cost per request is a few reads and a bytes search: checked against ``wrk``
in ``bench/run.py`` (the "load generator check" row).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

class HTTPError(Exception):
    pass


@dataclass(slots=True)
class Sample:
    start: float
    first: float  # first block holding the marker (== end when none was seen)
    end: float
    status: int


@dataclass
class Target:
    host: str
    port: int
    path: str
    body: bytes
    first_marker: re.Pattern | None = None  # what counts as "the first token" in the body
    raw: bytes = field(init=False)

    def __post_init__(self) -> None:
        head = (f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(self.body)}\r\n\r\n")
        self.raw = head.encode() + self.body


class Connection(asyncio.Protocol):
    """One keep-alive connection. The response is parsed in ``data_received`` (no stream reader, no task
    wake-up per TCP segment): the waiting coroutine is woken once, when the answer is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: asyncio.Future | None = None
        self.lost: BaseException | None = None
        self._reset(None)

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.lost = exc or HTTPError("connection closed")
        if self.done is not None and not self.done.done():
            self.done.set_exception(HTTPError(f"connection closed mid-response: {self.lost!r}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.done is None or self.done.done():
            return
        try:
            if self._parse():
                self.done.set_result(None)
        except Exception as exc:  # a malformed answer fails the request, not the loop
            self.done.set_exception(exc)

    # response parsing
    def _reset(self, marker) -> None:
        self.status = 0
        self.head: str | None = None
        self.chunked = False
        self.length = 0
        self.pos = 0
        self.marker = marker
        self.first: float | None = None
        self.close_after = False

    def _parse(self) -> bool:
        """Advance over what is buffered; True once the whole response is in."""
        buf = self.buf
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            self.head = head = bytes(buf[:end]).decode("latin-1").lower()
            del buf[: end + 4]
            self.status = int(head[9:12])
            self.close_after = "connection: close" in head
            self.chunked = "transfer-encoding: chunked" in head
            if not self.chunked:
                match = re.search(r"content-length:\s*(\d+)", head)
                if match is None:
                    raise HTTPError(f"no length in response head: {head[:200]!r}")
                self.length = int(match.group(1))
        if self.marker is not None and self.first is None and self.marker.search(buf, self.pos):
            self.first = time.perf_counter()
        if not self.chunked:
            if len(buf) < self.length:
                return False
            del buf[: self.length]
            return True
        pos = self.pos
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(buf[pos:line_end].split(b";", 1)[0], 16)
            need = line_end + 4 if size == 0 else line_end + 2 + size + 2  # no trailers from our servers
            if len(buf) < need:
                break
            pos = need
            if size == 0:
                del buf[:pos]
                self.pos = 0
                return True
        self.pos = pos
        return False

    async def request(self, target: Target) -> Sample:
        if self.lost is not None:
            raise HTTPError(f"connection lost: {self.lost!r}")
        self._reset(target.first_marker)
        self.done = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        self.transport.write(target.raw)
        await self.done
        end = time.perf_counter()
        self.done = None
        if self.close_after:
            raise HTTPError("server closed the connection")
        return Sample(start, self.first or end, end, self.status)


async def run_closed_loop(target: Target, *, concurrency: int, duration: float | None = None,
                          count: int | None = None, min_each: int = 0,
                          limit: float = 120.0) -> tuple[list[Sample], float]:
    """``concurrency`` workers, each sending as soon as its last answer is in, for ``duration`` seconds (and
    until every worker has ``min_each`` answers, at most ``limit`` seconds), or ``count`` requests in all.

    Returns the samples and the steady rate: per worker, answers after its first one divided by the time from
    its first answer to its last, summed over the workers. Workers start together and, against a server that
    serves them in lock-step, finish together: counting answers inside a fixed window would then measure the
    window, not the server."""
    conns = await asyncio.gather(*(Connection.open(target.host, target.port) for _ in range(concurrency)))
    per_worker: list[list[Sample]] = [[] for _ in conns]
    t0 = time.perf_counter()
    deadline = t0 + duration if duration is not None else float("inf")
    hard = t0 + limit
    remaining = [count if count is not None else -1]

    async def worker(conn: Connection, mine: list[Sample]) -> None:
        while True:
            now = time.perf_counter()
            if now >= hard or (now >= deadline and len(mine) >= min_each) or remaining[0] == 0:
                return
            remaining[0] -= 1
            mine.append(await conn.request(target))

    try:
        await asyncio.gather(*(worker(c, m) for c, m in zip(conns, per_worker)))
    finally:
        for conn in conns:
            conn.close()
    rate = 0.0
    for mine in per_worker:
        if len(mine) >= 2:
            rate += (len(mine) - 1) / max(mine[-1].end - mine[0].end, 1e-9)
    return [s for mine in per_worker for s in mine], rate


async def one_each(targets: list[Target], *, rounds: int) -> list[list[Sample]]:
    """Concurrency 1, interleaved A B, B A, A B ... (``rounds`` times), each target on its own connection."""
    conns = [await Connection.open(t.host, t.port) for t in targets]
    out: list[list[Sample]] = [[] for _ in targets]
    order = list(range(len(targets)))
    try:
        for _ in range(rounds):
            for i in order:
                out[i].append(await conns[i].request(targets[i]))
            order.reverse()
    finally:
        for conn in conns:
            conn.close()
    return out
