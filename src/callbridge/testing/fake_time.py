"""Fake time for agent tests: a clock that moves only when the test says, a driver that moves
it in small steps letting every ready task run in between, and worker "threads" that run a
job inline and complete it after the fake time the job charges. Every timing is then exact
and no test sleeps on the wall clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.clock import Clock

__all__ = ["FakeClock", "FakeWorkers", "drain", "drive"]

T = TypeVar("T")


async def drain(rounds: int = 10_000) -> None:
    """Let every task that is ready run (for code that waits on nothing but the loop and
    fake time). Raises AssertionError if the loop never settles (a busy loop)."""
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        await asyncio.sleep(0)
        # No public API says "nothing is ready"; the loop's ready queue does.
        if not loop._ready:  # type: ignore[attr-defined]
            return
    raise AssertionError("the loop never settled")


async def drive(clock: Clock, until: Awaitable[T], limit: float = 60.0, step: float = 0.001) -> T:
    """Advance a FakeClock `step` at a time, draining the loop in between, until `until` is
    done; returns its result. On any other clock (a real one), just await it.

    Raises AssertionError when `limit` seconds of fake time pass first."""
    fut = asyncio.ensure_future(until)
    if not isinstance(clock, FakeClock):
        return await fut
    end = clock.now() + limit
    await drain()
    while not fut.done():
        assert clock.now() < end, f"not done after {limit} s of fake time"
        await clock.advance(step)
        await drain()
    return fut.result()


class FakeWorkers(concurrent.futures.Executor):
    """Worker threads on a fake clock: a job runs inline when submitted and its future
    completes `charge()`d seconds later in fake time (at once if it charged nothing).

    A job charges the executor it runs on (e.g. a slow synthesizer calls `charge(0.15)`
    inside its work), so give the job and the code under test the same instance."""

    _background: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._cost = 0.0

    def charge(self, seconds: float) -> None:
        self._cost += seconds

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._cost = 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # the future carries it, as a thread's would
            fut.set_exception(exc)
            return fut
        cost, self._cost = self._cost, 0.0
        if cost <= 0:
            fut.set_result(result)
            return fut

        async def later() -> None:
            await self.clock.sleep_until(self.clock.now() + cost)
            fut.set_result(result)

        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)
        return fut
