"""A request deadline over many waits with one timer: what ``asyncio.timeout_at`` per wait costs per token.

``ChatService._sse`` waits for the next result once per TGI event, each wait bounded by the request's deadline.
``asyncio.timeout_at`` arms and cancels a loop timer for every wait (12 µs a token on uvloop on the bench's
2-core VM, a fifth of a streamed token's cost; bench/PERF-NOTES.md). :class:`Deadline` arms one timer for the
request, at the deadline; when it fires while the task waits in :meth:`Deadline.run`, the task is cancelled
there and the wait raises ``TimeoutError``, as ``asyncio.timeout_at`` would. A wait entered past the deadline,
or from another task, goes through ``asyncio.timeout_at`` itself. Call :meth:`close` when done (the timer is
cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Deadline"]

T = TypeVar("T")


class Deadline:
    __slots__ = ("when", "_loop", "_task", "_handle", "_waiting", "_fired")

    def __init__(self, when: float | None) -> None:
        self.when = when
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._waiting = False
        self._fired = False

    async def run(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, cancelled with ``TimeoutError`` at the deadline."""
        if self.when is None:
            return await awaitable
        task = asyncio.current_task()
        if self._task is None:
            self._loop, self._task = asyncio.get_running_loop(), task
        if task is not self._task or self._loop.time() >= self.when:
            async with asyncio.timeout_at(self.when):
                return await awaitable
        if self._handle is None:
            self._handle = self._loop.call_at(self.when, self._fire)
        cancelling = task.cancelling()
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._fired:
                self._fired = False
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def _fire(self) -> None:
        self._handle = None
        if self._waiting and not self._fired:  # else the next run() sees the deadline passed
            self._fired = True
            self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
