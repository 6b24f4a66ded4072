"""The process's one media clock: one pass ticks every leg, on absolute deadlines."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.testing import settle
from callbridge.transports.media_clock import STALL, TICK, MediaClock, for_clock


class Boom(Exception):
    pass


async def test_many_legs_share_one_pass_per_tick() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    seen: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    tasks = [
        asyncio.create_task(media.ticks(lambda now, _m, k=k: seen[k].append(now), lambda: False))
        for k in seen
    ]
    await settle()
    await clock.advance(5 * TICK)
    assert media.passes == 5  # one wake-up per tick, not one per leg
    assert seen["a"] == seen["b"] == seen["c"] and len(seen["a"]) == 5
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert media.subscribers == 0


async def test_a_late_leg_joins_the_running_phase() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    t0 = clock.now()
    first: list[float] = []
    late: list[float] = []
    a = asyncio.create_task(media.ticks(lambda now, _m: first.append(now), lambda: False))
    await settle()
    await clock.advance(0.025)  # tick at 20 ms; now 25 ms
    b = asyncio.create_task(media.ticks(lambda now, _m: late.append(now), lambda: False, limit=2))
    await settle()
    await clock.advance(0.04)
    await asyncio.wait_for(b, 1)
    assert [round(t - t0, 6) for t in late] == [0.04, 0.06]  # the next pass, not 20 ms later
    a.cancel()
    await asyncio.gather(a, return_exceptions=True)


async def test_a_failing_leg_ends_alone() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    good: list[float] = []

    def bad(now: float, missed: int) -> None:
        raise Boom

    ok = asyncio.create_task(media.ticks(lambda now, _m: good.append(now), lambda: False))
    failing = asyncio.create_task(media.ticks(bad, lambda: False))
    await settle()
    await clock.advance(3 * TICK)
    with pytest.raises(Boom):
        await asyncio.wait_for(failing, 1)
    assert len(good) == 3  # the other leg never missed a tick
    ok.cancel()
    await asyncio.gather(ok, return_exceptions=True)


async def test_an_ended_leg_stops_at_the_next_pass_and_the_runner_goes_away() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    ended = False
    seen: list[float] = []
    task = asyncio.create_task(media.ticks(lambda now, _m: seen.append(now), lambda: ended))
    await settle()
    await clock.advance(2 * TICK)
    ended = True
    await clock.advance(TICK)
    await asyncio.wait_for(task, 1)
    assert len(seen) == 2
    assert media.subscribers == 0 and media._runner is None
    # A new subscriber starts a new runner.
    again = asyncio.create_task(
        media.ticks(lambda now, _m: seen.append(now), lambda: False, limit=1)
    )
    await settle()
    await clock.advance(TICK)
    await asyncio.wait_for(again, 1)
    assert len(seen) == 3


async def test_a_stall_reanchors_and_reports_missed_ticks_to_every_leg() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    seen: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
    tasks = [
        asyncio.create_task(
            media.ticks(lambda now, m, k=k: seen[k].append((now, m)), lambda: False, limit=3)
        )
        for k in seen
    ]
    await settle()
    t0 = clock.now()
    await clock.advance(TICK)
    clock._now += 0.5  # blocked for 500 ms
    await clock.advance(0)
    await clock.advance(TICK)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert seen["a"] == seen["b"]
    (t1, m1), (t2, m2), (t3, m3) = seen["a"]
    assert (round(t1 - t0, 6), m1) == (0.02, 0)
    late = t2 - (t0 + 2 * TICK)
    assert late > STALL and m2 == int(late / TICK)
    assert (round(t3 - t2, 6), m3) == (0.02, 0)


async def test_one_media_clock_per_clock() -> None:
    a, b = FakeClock(), FakeClock()
    assert for_clock(a) is for_clock(a)
    assert for_clock(a) is not for_clock(b)


async def test_each_leg_ticks_in_its_own_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("call", default="none")
    clock = FakeClock()
    media = MediaClock(clock)
    seen: list[str] = []

    async def leg(name: str) -> None:
        var.set(name)
        await media.ticks(lambda now, _m: seen.append(var.get()), lambda: False, limit=1)

    tasks = [asyncio.create_task(leg(n)) for n in ("call-1", "call-2")]
    await settle()
    await clock.advance(TICK)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert seen == ["call-1", "call-2"]


async def test_lateness_is_the_latest_pass_start_since_last_asked() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    task = asyncio.create_task(media.ticks(lambda now, _m: None, lambda: False))
    await settle()
    assert media.take_lateness() is None  # no pass yet
    await clock.advance(TICK)
    assert media.take_lateness() == 0.0  # on time
    clock._now += TICK + 0.012  # the loop was busy until 12 ms past the next deadline
    await clock.advance(0)
    assert round(media.take_lateness() or 0, 6) == 0.012
    assert media.take_lateness() is None  # taken
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
