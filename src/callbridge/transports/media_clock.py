"""One 20 ms media clock per process: every leg's tick runs in one pass of one task.

A timer and a task wake-up per call every 20 ms cost more than the media work itself once
hundreds of calls are up (issue 12's profile: the per-call pacing task was 39-64 % of the
gateway's time at 125 echo calls). Here the legs subscribe to one schedule on their clock
(`for_clock`): one sleep, then each subscriber's `on_tick(now, missed)` in subscription order.
A leg's first tick is the clock's next pass (within 20 ms of subscribing).

Semantics kept from the per-leg loop it replaces (transports.leg_base): absolute deadlines
(start + n * TICK, no drift); a pass later than STALL skips the ticks it owes, on the same
grid, and tells every leg how many never ran (`missed`), so recordings keep wall time; a
failing `on_tick` ends that leg's loop with the exception and nobody else's.

Phases: the 20 ms tick is divided into PHASES slots SLOT apart, and each leg ticks in one of
them (a pass runs only for a slot that has legs). Every leg starts in slot 0, so legs that
never ask tick together as on a plain 20 ms clock. A leg whose caller's frames are due well
before its tick (the jitter buffer's slack: a frame popped 15 ms after it was due is 15 ms of
delay the call did not need) returns from `on_tick` how much earlier it wants to tick, and
moves to the slot that much earlier: the next tick comes that much sooner, once, and the
ones after keep 20 ms. Without phases, a frame waits for the shared pass for a random 0-20 ms
on top of the jitter buffer's target (about 10 ms on average, 20 ms at worst, on every hop
through the gateway). Spreading legs over slots also cuts one long pass into shorter ones.

The runner task exists only while someone subscribes; it belongs to the clock's MediaClock
and is cancelled when the last subscriber leaves, so no task outlives its calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable

from callbridge.core.clock import Clock
from callbridge.core.frames import FRAME_MS

__all__ = ["PHASES", "SLOT", "STALL", "TICK", "MediaClock", "for_clock"]

TICK = FRAME_MS / 1000
PHASES = 4
SLOT = TICK / PHASES  # 5 ms: finer costs more wake-ups than it saves latency
# A pass this late means the loop stalled (GC, overload): skip the ticks owed rather than
# burst. Below it the passes owed run back to back and every leg's audio is that much late (the jitter
# buffer holds it rather than drop it, since the catch-up passes would find nothing to play),
# so it bounds the delay an overload adds to a call; beyond it the owed ticks are skipped and
# each buffer drops what fell overdue, once.
STALL = 0.06

# on_tick(now, missed) -> None, or seconds the leg wants to tick earlier from now on
OnTick = Callable[[float, int], float | None]


class _Subscriber:
    __slots__ = ("context", "done", "ended", "left", "missed", "on_tick", "slot")

    def __init__(
        self,
        on_tick: OnTick,
        ended: Callable[[], bool],
        limit: int | None,
        done: asyncio.Future[None],
    ) -> None:
        self.on_tick = on_tick
        self.ended = ended
        self.left = limit  # ticks still to run (None: until ended)
        self.done = done
        self.slot = 0
        self.missed = 0  # ticks a stall skipped, told at the leg's next tick
        # The leg's own context (its call id for log lines, what tasks started from a tick
        # inherit), as when each leg ticked in its own task.
        self.context = contextvars.copy_context()


class MediaClock:
    """The shared schedule of one clock. Lives on the event loop; not thread-safe."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # One dict per slot, insertion-ordered: a stable pass order within a slot.
        self._slots: list[dict[int, _Subscriber]] = [{} for _ in range(PHASES)]
        self._count = 0
        self._ids = 0
        self._runner: asyncio.Task[None] | None = None
        self.passes = 0  # passes run so far (tests, metrics)
        self._late: float | None = None  # the latest pass start since take_lateness()
        # When the running pass was due: a leg's tick runs at `now` >= this, later by the
        # pass's lateness and by the legs ticked before it in the pass.
        self.deadline = clock.now()

    @property
    def subscribers(self) -> int:
        return self._count

    def slot_sizes(self) -> list[int]:
        """Legs per slot (tests, metrics)."""
        return [len(slot) for slot in self._slots]

    async def ticks(
        self, on_tick: OnTick, ended: Callable[[], bool], *, limit: int | None = None
    ) -> None:
        """Call `on_tick(now, missed)` on every pass until `ended()` or `limit` ticks ran.
        Raises what `on_tick` raised; cancelling this unsubscribes."""
        if (limit is not None and limit <= 0) or ended():
            return
        loop = asyncio.get_running_loop()
        sub = _Subscriber(on_tick, ended, limit, loop.create_future())
        self._ids += 1
        key = self._ids
        self._slots[0][key] = sub
        self._count += 1
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._runner = loop.create_task(self._run(), name="media-clock")
        try:
            await sub.done
        finally:
            if self._slots[sub.slot].pop(key, None) is not None:
                self._count -= 1
            if not self._count and self._runner is not None and not self._runner.done():
                # Nobody left: the runner is asleep (this runs in a leg's task, never inside
                # a pass), so cancelling it loses nothing.
                self._runner.cancel()
                self._runner = None

    def take_lateness(self) -> float | None:
        """How late (seconds) the latest-starting pass since the last call began after its
        deadline; None when no pass ran since. This is the process's media load: a pass
        that takes longer than a tick makes the next one start late."""
        late, self._late = self._late, None
        return late

    async def _run(self) -> None:
        start = self.clock.now()
        n = 0  # slot passes since start: slot 0 runs at start + TICK, + 2 TICK, ...
        slots = self._slots
        while self._count:
            n += 1
            index = n % PHASES
            slot = slots[index]
            if not slot:
                continue
            deadline = start + n * SLOT
            await self.clock.sleep_until(deadline)
            now = self.clock.now()
            late = now - deadline
            if self._late is None or late > self._late:
                self._late = late
            if late > STALL:
                # Skip the ticks that never ran, on the same 20 ms grid: every leg keeps its
                # phase against its caller's packets (re-anchored on `now`, each would move by
                # up to a tick, and its jitter buffer would find frames due early, or popped
                # before their packets came). Every leg hears of them at its next tick.
                missed = int(late / TICK + 1e-9)  # whole ticks (0.48 / 0.02 is 23.999...)
                n += missed * PHASES  # the same slot, `missed` ticks on
                deadline = start + n * SLOT
                for each in slots:
                    for sub in each.values():
                        sub.missed += missed
            self.passes += 1
            self.deadline = deadline
            self._pass(slot, index)

    def _pass(self, slot: dict[int, _Subscriber], index: int) -> None:
        moves: list[tuple[int, _Subscriber, int]] = []
        now = self.clock.now
        for key, sub in list(slot.items()):
            if sub.done.done():
                continue
            # Ending is noticed here, at the pass after it (<= 20 ms), as the per-leg loop did.
            if sub.ended():
                sub.done.set_result(None)
                continue
            try:
                # Each leg gets the time its own tick runs at, not the pass's start: a pass
                # over hundreds of legs takes milliseconds, and what a leg received meanwhile
                # is stamped with real time.
                missed, sub.missed = sub.missed, 0
                earlier = sub.context.run(sub.on_tick, now(), missed)
            except Exception as exc:  # that leg's loop ends with it; the others tick on
                sub.done.set_exception(exc)
                continue
            if sub.left is not None:
                sub.left -= 1
                if sub.left <= 0:
                    sub.done.set_result(None)
                    continue
            if earlier is not None and earlier >= SLOT:
                # The slot `steps` earlier runs next `steps` slots sooner than this one would.
                steps = min(PHASES - 1, int(earlier / SLOT + 1e-9))
                moves.append((key, sub, (index - steps) % PHASES))
        for key, sub, to in moves:
            del slot[key]
            sub.slot = to
            self._slots[to][key] = sub


_CLOCKS: weakref.WeakKeyDictionary[Clock, MediaClock] = weakref.WeakKeyDictionary()


def for_clock(clock: Clock) -> MediaClock:
    """The process's media clock for `clock` (one per clock object: the gateway has one)."""
    try:
        media = _CLOCKS.get(clock)
        if media is None:
            media = _CLOCKS[clock] = MediaClock(clock)
    except TypeError:  # a clock that cannot be weakly referenced: its own schedule
        return MediaClock(clock)
    return media
