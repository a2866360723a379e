"""A non-streaming answer is worked on only while its client waits for it.

Once the request body is read, the ASGI ``receive`` channel has nothing more to say but ``http.disconnect``:
:func:`unless_disconnected` awaits the work and that message together, and cancels the work (closing its TGI
streams, so TGI stops generating) as soon as the client leaves. Streaming answers need no watcher: the server
stops iterating a stream whose client is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ClientGone(Exception):
    """The client left before its answer was ready."""


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answered something else at once must not make this spin


async def unless_disconnected(work: Awaitable, receive: Callable[[], Awaitable[dict]]):
    """``await work``, or raise :class:`ClientGone` (the work cancelled) when the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone()
    finally:
        for pending in (watcher, task):
            pending.cancel()
        await asyncio.gather(watcher, task, return_exceptions=True)
