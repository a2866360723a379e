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

_READ = 1 << 16


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


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def _more(self) -> bytes:
        data = await self.reader.read(_READ)
        if not data:
            raise HTTPError("connection closed mid-response")
        return data

    async def request(self, target: Target) -> Sample:
        start = time.perf_counter()
        self.writer.write(target.raw)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += await self._more()
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        status = int(head[9:12])
        lower = head.lower()
        marker = target.first_marker
        first = None
        if "transfer-encoding: chunked" in lower:
            # incremental chunked decoding over the buffer: size line, data, CRLF ... "0\r\n\r\n"
            pos = 0
            while True:
                if marker is not None and first is None and marker.search(buf, pos):
                    first = time.perf_counter()
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    del buf[:pos]
                    pos = 0
                    buf += await self._more()
                    continue
                size = int(buf[pos:line_end].split(b";", 1)[0], 16)
                need = line_end + 2 + size + 2
                if size == 0:
                    need = line_end + 4  # no trailers from our servers
                if len(buf) < need:
                    buf += await self._more()
                    continue
                pos = need
                if size == 0:
                    break
            del buf[:pos]
        else:
            match = re.search(r"content-length:\s*(\d+)", lower)
            if match is None:
                raise HTTPError(f"no length in response head: {head[:200]!r}")
            length = int(match.group(1))
            while len(buf) < length:
                buf += await self._more()
            del buf[:length]
        end_t = time.perf_counter()
        if "connection: close" in lower:
            raise HTTPError("server closed the connection")
        return Sample(start, first or end_t, end_t, status)


async def run_closed_loop(target: Target, *, concurrency: int, duration: float | None = None,
                          count: int | None = None, warmup: float = 0.0) -> tuple[list[Sample], float]:
    """``concurrency`` workers for ``duration`` seconds (or ``count`` requests in all). Returns the samples
    that ended inside the measured window [start + warmup, deadline] and that window's length."""
    conns = await asyncio.gather(*(Connection.open(target.host, target.port) for _ in range(concurrency)))
    samples: list[Sample] = []
    t0 = time.perf_counter()
    deadline = t0 + duration if duration is not None else float("inf")
    remaining = [count if count is not None else -1]

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            if remaining[0] == 0:
                return
            remaining[0] -= 1
            samples.append(await conn.request(target))

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    window_start = t0 + warmup
    window_end = min(deadline, max((s.end for s in samples), default=t0))
    kept = [s for s in samples if window_start <= s.end <= window_end]
    return kept, max(window_end - window_start, 1e-9)


async def one_each(targets: list[Target], *, rounds: int) -> list[list[Sample]]:
    """Concurrency 1, interleaved: target A, target B, ..., ``rounds`` times, each on its own connection."""
    conns = [await Connection.open(t.host, t.port) for t in targets]
    out: list[list[Sample]] = [[] for _ in targets]
    try:
        for _ in range(rounds):
            for i, (target, conn) in enumerate(zip(targets, conns)):
                out[i].append(await conn.request(target))
    finally:
        for conn in conns:
            conn.close()
    return out
