"""The leg base every transport builds on: bounded play with back-pressure, pop/flush/hold,
the end (first reason stays, inputs end, play fails), and the paced 20 ms loop on a fake clock
(absolute deadlines, a limit, re-anchoring after a stall)."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegInput, TransferResult
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import LegInfo
from callbridge.transports.leg_base import STALL, TICK, LegBase, LegCore


def tone(n: int) -> AudioFrame:
    return AudioFrame(bytes([n % 250 + 1, 10]) * FRAME_SAMPLES)


def core(limit: int = 3, clock: FakeClock | None = None) -> LegCore:
    info = LegInfo("test", "inbound")
    return LegCore(info, clock or FakeClock(), name="leg-x", playout_limit_frames=limit)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_play_waits_at_the_limit_and_each_pop_makes_room() -> None:
    c = core(limit=3)

    async def player() -> None:
        for i in range(5):
            await c.play(tone(i), utterance=7)

    task = asyncio.create_task(player())
    await settle()
    assert len(c.playout) == 3 and not task.done()  # back-pressure: the 4th waits
    item = c.pop()
    assert item is not None and item[0] == tone(0) and item[1] == 7
    await settle()
    assert len(c.playout) == 3 and not task.done()
    c.pop()
    await settle()
    assert task.done() and len(c.playout) == 3
    assert c.playout.played(7) == 2 * FRAME_SAMPLES


async def test_flush_drops_the_queue_and_releases_a_waiting_player() -> None:
    c = core(limit=2)
    task = asyncio.create_task(c.play(tone(0)))
    await c.play(tone(1))
    await settle()
    task2 = asyncio.create_task(c.play(tone(2)))
    await settle()
    assert not task2.done()
    assert c.flush() == 2 * FRAME_SAMPLES
    await settle()
    assert task.done() and task2.done() and len(c.playout) == 1  # what came after plays


async def test_a_play_waiting_for_room_fails_when_the_leg_ends() -> None:
    c = core(limit=1)
    await c.play(tone(0))
    waiting = asyncio.create_task(c.play(tone(1)))
    await settle()
    assert c.finish("remote_bye")
    with pytest.raises(CallEnded, match="leg-x"):  # no call id yet: the leg's name
        await waiting
    c.info.ids["call_id"] = "call-9"
    with pytest.raises(CallEnded, match="call-9"):
        await c.play(tone(2))


async def test_the_first_reason_stays_and_inputs_end_after_what_was_put() -> None:
    c = core()
    c.end_reason = "local_bye"  # a hang-up under way, not yet ended
    assert not c.ended
    c.put(DtmfDigit("5", 80))
    assert c.finish("remote_bye") and not c.finish("error")
    assert c.ended and c.end_reason == "local_bye"
    got: list[LegInput] = [item async for item in c.inputs()]
    assert got == [DtmfDigit("5", 80)]
    await asyncio.wait_for(c.wait_ended(), 1)


async def test_ticks_run_on_absolute_deadlines_up_to_a_limit() -> None:
    clock = FakeClock()
    c = core(clock=clock)
    t0 = clock.now()
    seen: list[tuple[float, int]] = []
    task = asyncio.create_task(c.tick_loop(lambda now, missed: seen.append((now, missed)), limit=5))
    await settle()  # the loop starts now: t0
    for _ in range(30):  # 10 ms steps: every tick's deadline is met exactly
        await clock.advance(0.01)
    assert task.done()
    assert [round(now - t0, 6) for now, _ in seen] == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert all(missed == 0 for _, missed in seen)


async def test_a_stalled_loop_reports_the_missed_ticks_and_reanchors() -> None:
    clock = FakeClock()
    c = core(clock=clock)
    t0 = clock.now()
    seen: list[tuple[float, int]] = []
    task = asyncio.create_task(c.tick_loop(lambda now, missed: seen.append((now, missed))))
    await settle()
    await clock.advance(TICK)  # tick 1 on time
    clock._now += 0.5  # the loop was blocked for 500 ms (no sleeper woke)
    await clock.advance(0)
    await clock.advance(TICK)
    c.finish("done")
    await clock.advance(TICK)
    await asyncio.wait_for(task, 1)
    (t1, m1), (t2, m2), (t3, m3) = seen
    assert (round(t1 - t0, 6), m1) == (0.02, 0)
    late = t2 - (t0 + 2 * TICK)
    assert late > STALL and m2 == int(late / TICK)  # 24 ticks of wall time never ran
    assert (round(t3 - t2, 6), m3) == (0.02, 0)  # then every 20 ms, on the same grid


class Half(LegBase):
    async def run(self) -> None: ...

    def stats(self) -> dict[str, int | float]:
        return {}


def test_a_leg_must_implement_its_wire() -> None:
    with pytest.raises(TypeError, match="hangup"):
        Half(core())  # type: ignore[abstract]


class Minimal(Half):
    async def send_dtmf(self, digits: str) -> None: ...

    async def transfer(self, target: str) -> TransferResult:
        return TransferResult(ok=False)

    async def hangup(self, reason: str = "normal") -> None:
        self.core.finish(reason)


async def test_the_base_maps_the_core_onto_the_call_leg_surface() -> None:
    leg = Minimal(core(limit=5))
    await leg.play(tone(1), utterance=1)
    await leg.play(tone(2), utterance=1)
    assert leg.playing and leg.played(1) == 0
    leg.pause_playout(True)
    assert leg.core.pop() is None and leg.played(1) == 0  # held: nothing sent, nothing lost
    leg.pause_playout(False)
    assert leg.core.pop() is not None and leg.played(1) == FRAME_SAMPLES
    assert leg.playback_dbfs > -60
    assert leg.flush_playout() == FRAME_SAMPLES
    leg.set_tap(None)
    await leg.hangup("agent_done")
    assert leg.ended and leg.end_reason == "agent_done"
    await asyncio.wait_for(leg.wait_ended(), 1)


async def test_a_listener_gets_inputs_in_order_from_the_queue_then_as_they_arrive() -> None:
    c = core()
    first, second, third = (AudioFrame(bytes([i, 0]) * FRAME_SAMPLES) for i in (1, 2, 3))
    c.put(first)
    c.put(DtmfDigit("7", 80))
    heard: list[LegInput] = []
    c.listen(heard.append)
    assert heard == [first, DtmfDigit("7", 80)]  # what was queued, first
    c.put(second)
    assert heard[-1] == second  # at once, inside put (the media pass)
    c.finish("remote_bye")
    c.put(third)  # after the end: nobody hears it
    assert heard[-1] == second
    assert [item async for item in c.inputs()] == []  # inputs() just ends


async def test_offer_queues_without_waiting_and_says_when_full() -> None:
    c = core(limit=2)
    f = AudioFrame.silence()
    assert c.offer(f) and c.offer(f)
    assert not c.offer(f)  # full: nothing queued, nothing waited for
    assert len(c.playout) == 2
    c.pop()
    assert c.offer(f)
    c.finish("remote_bye")
    with pytest.raises(CallEnded):
        c.offer(f)
