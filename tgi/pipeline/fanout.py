"""Running several generations as one answer: ``n`` choices interleaved as their events arrive, or gathered;
the first failure cancels the others (no choice keeps TGI busy for an answer that is already an error)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing


async def all_or_none(awaitables: list) -> list:
    """``asyncio.gather`` that cancels the others when one fails (n > 1: no choice keeps TGI busy for an
    answer that is already an error), and all of them when it is cancelled itself."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and task.exception() is not None:
                raise task.exception()
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def tag(source: AsyncIterator, index: int) -> AsyncIterator[tuple[int, object]]:
    async with aclosing(source):
        async for item in source:
            yield index, item


async def merge(sources: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Interleaves n choices as their events arrive; the first failure cancels the others."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, source: AsyncIterator) -> None:
        try:
            async with aclosing(source):
                async for item in source:
                    await queue.put((i, item))
            await queue.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(sources)]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
