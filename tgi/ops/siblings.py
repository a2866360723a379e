"""How the workers of one gateway (``--workers N``) see each other's figures for ``/metrics``.

Each worker listens on a Unix socket ``worker-<index>.sock`` in a private directory that the supervisor made
for this gateway (mode 0700); a connection gets one JSON document, the worker's metrics snapshot, and is
closed. The worker that receives a scrape reads every other worker's socket and renders the sum.

Why this rather than prometheus-client's multiprocess mode (a memory-mapped file per process and metric): the
hot path stays as it is (plain integer additions, no lock and no file write per request), the figures are
exact at scrape time and include live gauges (requests and generations in flight, endpoint admission), and
the hand-written exposition (tgi/ops/metrics.py) keeps its names and labels. The price: the counters of a
worker that died and was restarted start again from zero, which Prometheus' ``rate()`` reads as a counter
reset (the supervisor restarts workers only after a crash).

The socket file also tells the supervisor that a worker finished its start-up (it is made after the runtime
opened, just before the worker listens on the port).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

log = logging.getLogger("gateway.workers")

__all__ = ["gather_snapshots", "serve_snapshots", "socket_path"]

_TIMEOUT = 2.0  # seconds a busy sibling gets to answer a scrape
_LIMIT = 16 * 1024 * 1024


def socket_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"worker-{index}.sock"


@contextlib.asynccontextmanager
async def serve_snapshots(directory: str | Path, index: int, snapshot: Callable[[], dict]) -> AsyncIterator[None]:
    """Answers every connection on this worker's socket with ``snapshot()`` as JSON, while inside."""
    path = socket_path(directory, index)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot()).encode())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by this worker's previous life
    server = await asyncio.start_unix_server(answer, path=str(path))
    os.chmod(path, 0o600)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _read(path: Path) -> dict | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=_LIMIT), _TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        return None  # a worker that is restarting, or gone
    try:
        return json.loads(await asyncio.wait_for(reader.read(_LIMIT), _TIMEOUT))
    except (OSError, ValueError, asyncio.TimeoutError) as exc:
        log.warning("worker socket %s gave no snapshot: %s", path.name, exc)
        return None
    finally:
        writer.close()


async def gather_snapshots(directory: str | Path, index: int, own: dict) -> list[dict]:
    """``own`` and the snapshot of every other worker that answers."""
    others = [p for p in sorted(Path(directory).glob("worker-*.sock")) if p != socket_path(directory, index)]
    found = await asyncio.gather(*(_read(p) for p in others))
    return [own, *(s for s in found if s is not None)]
