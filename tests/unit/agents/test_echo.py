"""The echo agent on a FakeLeg ticked by hand like the real one: one frame in, one frame out."""

from __future__ import annotations

import asyncio

from callbridge.agents.echo import PLAYOUT_CUSHION_FRAMES, EchoAgent
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.frames import AudioFrame
from callbridge.testing import FakeLeg


def frame(i: int) -> AudioFrame:
    return AudioFrame(bytes([i % 255 + 1, 0]) * 160)


async def echo(delay_ms: int, stalled: set[int]) -> list[AudioFrame | None]:
    """80 ticks, the first 60 each hearing the next frame; what went out each tick (None: a
    hole, nothing queued). On the ticks in `stalled` the loop does not yield before the next
    tick: the agent's task runs late, as on a busy box."""
    leg = FakeLeg(FakeClock(), after_script="nothing")
    leg.feed(*(frame(i) for i in range(60)))
    agent = EchoAgent(delay_ms=delay_ms)
    async with asyncio.timeout(5):
        task = asyncio.create_task(agent.run(leg))
        await asyncio.sleep(0)
        for n in range(80):
            leg.tick()
            if n not in stalled:
                for _ in range(5):  # let the agent's task run
                    await asyncio.sleep(0)
        leg.end()
        await task
    return [AudioFrame(s.pcm) if s.utterance is not None else None for s in leg.sent]


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


async def test_a_burst_bigger_than_the_playout_is_echoed_whole_and_in_order() -> None:
    # Audio that arrives faster than real time (Twilio's WebSocket delivers in bursts): the
    # playout holds 20 frames; the rest waits in the echo's backlog, nothing is dropped.
    leg = FakeLeg(FakeClock(), after_script="nothing")
    agent = EchoAgent(delay_ms=0)
    frames = [frame(i) for i in range(100)]
    async with asyncio.timeout(5):
        task = asyncio.create_task(agent.run(leg))
        await asyncio.sleep(0)
        for f in frames:
            leg.put(f)  # all at once, outside the ticks
        for _ in range(120):
            leg.tick()
            for _ in range(5):
                await asyncio.sleep(0)
        leg.end()
        await task
    sent = [AudioFrame(s.pcm) for s in leg.sent if s.utterance is not None]
    assert sent == frames
