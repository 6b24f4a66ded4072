"""The clocks' sleeps: a deadline already past still lets the loop run everything else once."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.core.asyncio_clock import FakeClock, LoopClock
from callbridge.core.clock import Clock


@pytest.mark.parametrize("clock", [LoopClock(), FakeClock()], ids=["loop", "fake"])
async def test_a_past_deadline_yields_to_the_loop(clock: Clock) -> None:
    # A loop that runs late (the media clock catching up on its passes) sleeps until deadlines
    # already past; if such a sleep did not yield, nothing else on the loop would run until
    # it caught up (found at 800 calls: the load watcher woke 200-560 ms late).
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    task = asyncio.create_task(other())
    for _ in range(3):
        await clock.sleep_until(clock.now() - 1.0)
    assert ran == [1]
    await task


async def test_the_loop_clock_sleeps_until_its_deadline() -> None:
    clock = LoopClock()
    deadline = clock.now() + 0.01
    await clock.sleep_until(deadline)
    assert clock.now() >= deadline
