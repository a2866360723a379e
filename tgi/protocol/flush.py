"""One socket write per TGI read: the hand-off between the response writer and the TGI client.

A streaming response that buffers its SSE chunks (``tgi/api/streaming.py``) registers a flush for its task with
:func:`flushing`; the TGI client awaits :func:`flush_pending` right before it waits for the network. So every
chunk made from the events of one TCP read goes out in one write, and nothing made is held back while the
gateway waits for TGI. The callback is a ``ContextVar`` (task-local, no global state): a task that inherits the
context but is not the writer (``_merge``'s pumps for ``n > 1``) sees it and skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

__all__ = ["flush_pending", "flushing"]

_FLUSH: ContextVar[tuple[asyncio.Task, Callable[[], Awaitable[None]]] | None] = ContextVar("gateway_flush",
                                                                                          default=None)


@contextlib.contextmanager
def flushing(flush: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """While in this block, the current task's pending output is written by ``flush()`` before the TGI client
    waits for the network."""
    token = _FLUSH.set((asyncio.current_task(), flush))
    try:
        yield
    finally:
        _FLUSH.reset(token)


async def flush_pending() -> None:
    registered = _FLUSH.get()
    if registered is not None and registered[0] is asyncio.current_task():
        await registered[1]()
