"""SIGINT/SIGTERM during a long start-up wait (a container loading, a download): they cancel the wait even
where a server has deferred those signals (uvicorn does during lifespan start-up); the previous handlers
still run and are restored afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def cancel_on_signals(task: asyncio.Task | None = None) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM cancel ``task`` (default: the current one) and then run the handler
    that was installed before (uvicorn's, asyncio.run's), except Python's KeyboardInterrupt default.
    Yields the list of signals received. A no-op outside the main thread."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    loop = asyncio.get_running_loop()
    task = task or asyncio.current_task()
    previous: dict[int, object] = {}

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        before = previous.get(signum)
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)  # type: ignore[arg-type]


def only_signals_cancelled(received: list[int]) -> bool:
    """Inside ``except CancelledError`` under ``cancel_on_signals``: True (and the cancellation is consumed)
    when a signal was the only reason, so the caller may raise its own error instead."""
    task = asyncio.current_task()
    if not received or task is None:
        return False
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    return uncancel() == 0 if uncancel is not None else True
