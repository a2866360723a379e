"""tgi.pipeline.deadline.Deadline: one timer for a stream's waits, with asyncio.timeout_at's outcomes."""

from __future__ import annotations

import asyncio

import pytest

from tgi.pipeline.deadline import Deadline


async def test_waits_before_the_deadline_return_their_values():
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 60)
    try:
        for i in range(100):
            assert await deadline.run(asyncio.sleep(0, result=i)) == i
    finally:
        deadline.close()
    assert Deadline(None).when is None and await Deadline(None).run(asyncio.sleep(0, result=7)) == 7


async def test_the_deadline_cancels_the_wait_in_progress():
    closed = asyncio.Event()

    async def tokens():
        try:
            yield 1
            await asyncio.Event().wait()  # TGI sends nothing more
            yield 2
        finally:
            closed.set()  # the TGI stream is closed: TGI stops generating

    source = tokens()
    deadline = Deadline(asyncio.get_running_loop().time() + 0.05)
    assert await deadline.run(anext(source)) == 1
    with pytest.raises(TimeoutError):
        await deadline.run(anext(source))
    await source.aclose()
    assert closed.is_set()
    assert asyncio.current_task().cancelling() == 0  # the timer's cancel was taken back


async def test_a_wait_entered_after_the_deadline_times_out():
    deadline = Deadline(asyncio.get_running_loop().time() - 1)
    with pytest.raises(TimeoutError):
        await deadline.run(asyncio.Event().wait())


async def test_an_outside_cancel_stays_a_cancel():
    started = asyncio.Event()

    async def waiter():
        deadline = Deadline(asyncio.get_running_loop().time() + 60)
        started.set()
        try:
            await deadline.run(asyncio.Event().wait())
        finally:
            deadline.close()

    task = asyncio.create_task(waiter())
    await started.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_closed_deadline_cancels_nothing():
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 0.02)
    assert await deadline.run(asyncio.sleep(0, result=1)) == 1
    deadline.close()
    await asyncio.sleep(0.05)  # past the deadline: no cancel arrives in this task
    assert asyncio.current_task().cancelling() == 0
