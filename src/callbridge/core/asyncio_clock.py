"""Clock implementations: the event loop's clock and a fake clock for tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class LoopClock:
    """Loop time (monotonic). Pacing uses absolute deadlines, so sleeps never accumulate drift.

    asyncio's loop time is `time.monotonic()` (BaseEventLoop.time), read here directly: the
    media path reads the clock a few times per call every 20 ms, and the way through the
    running loop was three calls for the same number."""

    now = staticmethod(time.monotonic)

    async def sleep_until(self, deadline: float) -> None:
        # A deadline already past still yields to the loop once, as asyncio.sleep(0) and the
        # fake clock do: a loop that runs late (the media clock catching up on its passes)
        # would otherwise run pass after pass without letting anything else in. Measured at
        # 800 echo calls on busy cores: the 100 ms load watcher woke 200-560 ms late while the
        # passes caught up, so SIP, timers and the overload guard's samples waited that long.
        delay = deadline - self.now()
        await asyncio.sleep(delay if delay > 0 else 0)


class FakeClock:
    """A clock that only moves when a test calls `advance`. Sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float, step: float | None = None) -> None:
        """Move time forward, waking sleepers in order and letting woken tasks run."""
        target = self._now + seconds
        while True:
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            fut.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)
