"""Drive a real transport leg on fake time: what a transport's unit tests share.

The leg runs as it would in a call (its `run()` task), everything it hands the agent is
collected, and time moves one 20 ms tick at a time on the FakeClock, so a test can say "after
three ticks the wire carried this".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.events import LegInput
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import CallLeg


async def settle(rounds: int = 20) -> None:
    """Let the tasks that are ready run (a few loop turns; no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class LegDriver:
    """`async with LegDriver(leg, clock) as d:` runs the leg and reads its inputs; on the way
    out, hangs up if the leg is still up and waits for both tasks."""

    def __init__(self, leg: CallLeg, clock: FakeClock) -> None:
        self.leg = leg
        self.clock = clock
        self.received: list[LegInput] = []
        self.inputs_done = False
        self.t0 = clock.now()
        self.n = 0

    async def __aenter__(self) -> LegDriver:
        self.task = asyncio.create_task(self.leg.run())
        self.reader = asyncio.create_task(self._read())
        await settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.leg.ended:
            await self.leg.hangup("test_done")
        await self.ticks(2)
        await asyncio.wait_for(self.task, 1)
        await asyncio.wait_for(self.reader, 1)

    async def _read(self) -> None:
        async for item in self.leg.inputs():
            self.received.append(item)
        self.inputs_done = True

    def frames(self) -> list[AudioFrame]:
        """The caller's audio handed to the agent so far."""
        return [f for f in self.received if isinstance(f, AudioFrame)]

    async def ticks(self, n: int) -> None:
        """Move time to just past the next `n` tick deadlines, one at a time."""
        for _ in range(n):
            self.n += 1
            await self.clock.advance(self.t0 + 0.02 * self.n + 1e-6 - self.clock.now())

    async def play(self, frames: Sequence[AudioFrame], utterance: int = 1) -> asyncio.Task[None]:
        """The agent plays `frames` (in a task: play() waits while the queue is full)."""

        async def player() -> None:
            for frame in frames:
                await self.leg.play(frame, utterance)

        task = asyncio.create_task(player())
        await settle()
        return task
