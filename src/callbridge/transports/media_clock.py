"""One 20 ms media clock per process: every leg's tick runs in one pass of one task.

A timer and a task wake-up per call every 20 ms cost more than the media work itself once
hundreds of calls are up (issue 12's profile: the per-call pacing task was 39-64 % of the
gateway's time at 125 echo calls). Here the legs subscribe to one schedule on their clock
(`for_clock`): one sleep, then each subscriber's `on_tick(now, missed)` in subscription order.
A leg's first tick is the clock's next pass (within 20 ms of subscribing).

Semantics kept from the per-leg loop it replaces (transports.leg_base): absolute deadlines
(start + n * TICK, no drift); a pass later than STALL re-anchors the schedule and tells every
leg how many ticks never ran (`missed`), so recordings keep wall time; a failing `on_tick`
ends that leg's loop with the exception and nobody else's.

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

__all__ = ["STALL", "TICK", "MediaClock", "for_clock"]

TICK = FRAME_MS / 1000
# A pass this late means the loop stalled (GC, overload): re-anchor rather than burst.
STALL = 0.2

OnTick = Callable[[float, int], None]


class _Subscriber:
    __slots__ = ("context", "done", "ended", "left", "on_tick")

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
        # The leg's own context (its call id for log lines, what tasks started from a tick
        # inherit), as when each leg ticked in its own task.
        self.context = contextvars.copy_context()


class MediaClock:
    """The shared schedule of one clock. Lives on the event loop; not thread-safe."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._subs: dict[int, _Subscriber] = {}  # insertion-ordered: a stable pass order
        self._ids = 0
        self._runner: asyncio.Task[None] | None = None
        self.passes = 0  # passes run so far (tests, metrics)
        self._late: float | None = None  # the latest pass start since take_lateness()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

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
        self._subs[key] = sub
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._runner = loop.create_task(self._run(), name="media-clock")
        try:
            await sub.done
        finally:
            self._subs.pop(key, None)
            if not self._subs and self._runner is not None and not self._runner.done():
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
        n = 0
        while self._subs:
            n += 1
            deadline = start + n * TICK
            await self.clock.sleep_until(deadline)
            now = self.clock.now()
            late = now - deadline
            if self._late is None or late > self._late:
                self._late = late
            missed = 0
            if now - deadline > STALL:
                missed = int((now - deadline) / TICK)
                start, n = now, 0
            self.passes += 1
            self._pass(missed)

    def _pass(self, missed: int) -> None:
        for sub in list(self._subs.values()):
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
                sub.context.run(sub.on_tick, self.clock.now(), missed)
            except Exception as exc:  # that leg's loop ends with it; the others tick on
                sub.done.set_exception(exc)
                continue
            if sub.left is not None:
                sub.left -= 1
                if sub.left <= 0:
                    sub.done.set_result(None)


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
