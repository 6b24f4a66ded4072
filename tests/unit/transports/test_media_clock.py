"""The process's one media clock: one pass ticks every leg, on absolute deadlines."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.testing import settle
from callbridge.transports.media_clock import SLOT, STALL, TICK, MediaClock, for_clock


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


async def test_a_stall_skips_whole_ticks_and_keeps_every_legs_phase() -> None:
    """A 93 ms stall, off the 20 ms grid: the ticks owed are skipped on the same grid, so a
    leg that moved to a slot matching its caller's packets stays there. Re-anchored on the
    moment the loop woke, every leg would shift by up to a tick against its caller."""
    clock = FakeClock()
    media = MediaClock(clock)
    seen: list[tuple[float, int, float]] = []

    def on_tick(now: float, missed: int) -> float | None:
        seen.append((now, missed, now - media.deadline))
        return 0.0101 if len(seen) == 2 else None  # the second tick moves two slots earlier

    task = asyncio.create_task(media.ticks(on_tick, lambda: False, limit=8))
    await settle()
    t0 = clock.now()
    for _ in range(3):
        await clock.advance(TICK)
    clock._now += 0.093  # blocked
    await clock.advance(0)
    for _ in range(6):
        await clock.advance(TICK)
    await asyncio.wait_for(task, 1)
    phases = [round((now - t0) * 1000) % 20 for now, _, _ in seen]  # ms into the 20 ms grid
    assert phases[:2] == [0, 0] and phases[2] == 10  # moved: ticks at +10 ms
    stalled = next(i for i, (_, m, _) in enumerate(seen) if m)
    assert seen[stalled][1] == 4  # the stall's ticks that never ran
    assert 0 <= seen[stalled][2] < TICK  # the tick after it: late by less than a tick
    assert set(phases[stalled + 1 :]) == {10}  # ... and the leg keeps its phase


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


async def test_a_leg_with_slack_moves_to_an_earlier_phase() -> None:
    """A leg asks to tick 12 ms earlier: it moves two 5 ms slots earlier, its next tick comes
    10 ms sooner, and the ones after are 20 ms apart again; a leg that asks nothing stays."""
    clock = FakeClock()
    media = MediaClock(clock)
    t0 = clock.now()
    ask: list[float | None] = [None, 0.012, None, 0.004, None, None]
    moving: list[float] = []
    staying: list[float] = []

    def on_moving(now: float, _m: int) -> float | None:
        moving.append(round(now - t0, 6))
        return ask[len(moving) - 1]

    a = asyncio.create_task(media.ticks(on_moving, lambda: False, limit=6))
    b = asyncio.create_task(
        media.ticks(lambda now, _m: staying.append(round(now - t0, 6)), lambda: False)
    )
    await settle()
    await clock.advance(0.12)
    await asyncio.wait_for(a, 1)
    assert moving == [0.02, 0.04, 0.05, 0.07, 0.09, 0.11]  # under one slot (4 ms): no move
    assert staying == [0.02, 0.04, 0.06, 0.08, 0.1, 0.12]
    assert media.passes == 6 + 4  # slot 0 six times, the moved leg's slot four times
    b.cancel()
    await asyncio.gather(b, return_exceptions=True)
    assert media.subscribers == 0 and media.slot_sizes() == [0, 0, 0, 0]


async def test_legs_spread_over_phases_tick_in_their_own_passes() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    t0 = clock.now()
    seen: dict[int, list[float]] = {k: [] for k in range(4)}

    def leg(k: int) -> None:
        def on_tick(now: float, _m: int) -> float | None:
            first = not seen[k]
            seen[k].append(round(now - t0, 6))
            return k * SLOT if first and k else None  # each moves k slots earlier, once

        tasks.append(asyncio.create_task(media.ticks(on_tick, lambda: False, limit=3)))

    tasks: list[asyncio.Task[None]] = []
    for k in range(4):
        leg(k)
    await settle()
    await clock.advance(0.1)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert seen[0] == [0.02, 0.04, 0.06]
    assert seen[1] == [0.02, 0.035, 0.055]
    assert seen[2] == [0.02, 0.03, 0.05]
    assert seen[3] == [0.02, 0.025, 0.045]


async def test_a_stall_reaches_legs_in_every_phase_and_keeps_their_phases() -> None:
    clock = FakeClock()
    media = MediaClock(clock)
    t0 = clock.now()
    seen: dict[str, list[tuple[float, int]]] = {"home": [], "moved": []}

    def moved(now: float, m: int) -> float | None:
        seen["moved"].append((round(now - t0, 6), m))
        return 0.01 if len(seen["moved"]) == 1 else None

    tasks = [
        asyncio.create_task(
            media.ticks(lambda now, m: seen["home"].append((round(now - t0, 6), m)), lambda: False)
        ),
        asyncio.create_task(media.ticks(moved, lambda: False)),
    ]
    await settle()
    await clock.advance(TICK)  # both tick at 20 ms; "moved" goes 10 ms earlier
    clock._now += 0.5  # blocked: the pass due at 30 ms runs at 520 ms
    await clock.advance(0)
    await clock.advance(2 * TICK)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # The pass due at 30 ms runs for the one due at 510 ms, 10 ms late; the 24 ticks between
    # never ran, for either leg. Each keeps its phase on the 20 ms grid: "moved" 10 ms in,
    # "home" on it.
    assert seen["moved"][1] == (0.52, 24)
    assert seen["home"][1] == (0.52, 24)
    assert [t for t, _ in seen["moved"][2:]] == [0.53, 0.55]
    assert [t for t, _ in seen["home"][2:]] == [0.54, 0.56]
