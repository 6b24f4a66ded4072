"""`settle`: waiting for a turn to finish must not swallow the waiter's own cancellation
(issue 11: `suppress(BaseException)` around `await turn` did)."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.agents.voice import settle


async def test_the_waiters_cancellation_propagates_and_the_task_is_left_alone() -> None:
    release, started, cleaning = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()  # cleaning up takes until the test says so
            raise

    turn = asyncio.ensure_future(slow_to_stop())
    await started.wait()
    turn.cancel()
    waiter = asyncio.ensure_future(settle(turn))
    await cleaning.wait()  # the turn is cleaning up; the waiter waits for it
    waiter.cancel()
    async with asyncio.timeout(1):  # a deadline, not a wait: the old code never returned
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert not turn.done()  # still cleaning up, not cancelled twice
    release.set()
    await settle(turn)
    assert turn.cancelled()


async def test_the_tasks_own_error_or_cancellation_is_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("brain down")

    failed = asyncio.ensure_future(fails())
    await settle(failed)  # no raise, and the exception counts as retrieved
    assert isinstance(failed.exception(), RuntimeError)
    cancelled = asyncio.ensure_future(asyncio.Event().wait())
    cancelled.cancel()
    await settle(cancelled)
    assert cancelled.cancelled()
