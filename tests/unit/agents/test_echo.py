"""The echo agent against a leg that ticks like the real one: one frame in, one frame out."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from callbridge.agents.echo import PLAYOUT_CUSHION_FRAMES, EchoAgent
from callbridge.core.errors import CallEnded
from callbridge.core.events import LegInput
from callbridge.core.frames import AudioFrame


def frame(i: int) -> AudioFrame:
    return AudioFrame(bytes([i % 255 + 1, 0]) * 160)


class TickingLeg:
    """Each tick hands the agent the next frame heard and sends the next frame queued (or a
    hole, None, when the queue is empty), as SipLeg.run does. On the ticks in `stalled` the
    loop does not yield before the next tick: the agent's task runs late, as on a busy box."""

    def __init__(self, heard: list[AudioFrame], stalled: set[int]) -> None:
        self.heard = heard
        self.stalled = stalled
        self.sent: list[AudioFrame | None] = []
        self._inputs: asyncio.Queue[LegInput | None] = asyncio.Queue()
        self._playout: collections.deque[AudioFrame] = collections.deque()

    async def inputs(self) -> AsyncIterator[LegInput]:
        while (item := await self._inputs.get()) is not None:
            yield item
        raise CallEnded("remote_bye")

    async def play(self, frame: AudioFrame, utterance: int = 0) -> None:
        self._playout.append(frame)

    async def run(self, ticks: int) -> None:
        for n in range(ticks):
            if n < len(self.heard):
                self._inputs.put_nowait(self.heard[n])
            self.sent.append(self._playout.popleft() if self._playout else None)
            if n not in self.stalled:
                for _ in range(5):  # let the agent's task run
                    await asyncio.sleep(0)
        self._inputs.put_nowait(None)


async def echo(delay_ms: int, stalled: set[int]) -> list[AudioFrame | None]:
    heard = [frame(i) for i in range(60)]
    leg = TickingLeg(heard, stalled)
    agent = EchoAgent(delay_ms=delay_ms)
    async with asyncio.timeout(5):
        task = asyncio.create_task(agent.run(leg))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await leg.run(80)
        await task
    return leg.sent


async def test_the_echo_keeps_its_delay_and_has_no_holes_when_the_agent_runs_late() -> None:
    delay = 10  # frames (200 ms)
    steady = await echo(200, stalled=set())
    late = await echo(200, stalled={20, 21, 35, 50, 51})  # two ticks late at most
    for sent in (steady, late):
        loud = [i for i, f in enumerate(sent) if f is not None and any(f.pcm)]
        # Frame k, heard at tick k, goes out at tick k + delay (the queue sends it one tick
        # after the agent got it: the delay counts that tick too).
        assert loud[:50] == list(range(delay + 1, delay + 51)), loud[:50]
        assert [sent[i] for i in loud[:50]] == [frame(i) for i in range(50)]
    # What carried it: silence queued at the start, never a hole once the echo began.
    first = next(i for i, f in enumerate(late) if f is not None)
    assert first == delay + 1 - PLAYOUT_CUSHION_FRAMES, first
    assert all(f is not None for f in late[first : delay + 51])


async def test_without_a_delay_there_is_no_cushion_to_queue() -> None:
    sent = await echo(0, stalled=set())
    assert sent[1:61] == [frame(i) for i in range(60)]
    assert sent[0] is None
