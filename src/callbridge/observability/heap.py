"""The gateway process's heap and the garbage collector's pauses.

CPython's full collection (generation 2) stops the whole process while it walks every
object the collector tracks, and every call's media waits with it. A gateway that has just
started holds tens of thousands of such objects that live as long as the process (modules,
classes, the configuration, the voice models' Python side), and walking them again and again
finds nothing. Measured with 200 echo calls on one process: gen-2 pauses of 53 and 81 ms
during the calls, each one a stall of every call's media (send jitter max 60-90 ms, a
standing extra delay where packets were stamped late); with the startup heap frozen, no
gen-2 pause at all while the calls ran.

`freeze_startup_heap()` collects once, then moves what survived into the collector's
permanent generation (`gc.freeze`), which later collections skip. Call it once the process is
up and before calls arrive; what calls create afterwards is collected as usual.

`HeapKeeper` does the same for what calls build while they are up. Hundreds of live calls are
tens of thousands of tracked objects (~250 per listening call), and as calls start the
collector's rule (a full collection once the objects moved to the oldest generation since the
last one exceed a quarter of those there) brings full collections that walk every live call
and find nothing: 90-122 ms each with 250 listening calls per process on two busy cores,
every call's media stalled, new calls refused as overload. A call's objects go by reference
counting when it ends (tests/integration/test_call_garbage*.py: no cycles), so they need no
collector: while calls are up, once a collection of the middle or oldest generation has run
(the objects that survive it are the long-lived ones), the keeper freezes what is there, and
a full collection walks only what came since (at most a second's worth). Should something
that was frozen alive later become cyclic garbage, it waits in the permanent generation until
no call is up: then the keeper unfreezes everything, collects once and freezes again (as at
startup), and logs what that collection found (`heap.rebaselined`).

`GcPauses` times every collection (`gc.callbacks`) and reports the long ones, so an operator
sees a stall that no other number explains.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from callbridge.core.log import event

__all__ = ["LONG_PAUSE", "PAUSES", "GcPauses", "HeapKeeper", "freeze_startup_heap"]

log = logging.getLogger("callbridge.heap")

LONG_PAUSE = 0.020  # seconds: a full tick of every call's media


def freeze_startup_heap() -> int:
    """Collect, then freeze what is left; returns how many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Times the collector's runs; `on_pause(generation, seconds, collected)` hears each one
    of at least `threshold` seconds (a log line by default). Process-wide: install once."""

    def __init__(
        self,
        on_pause: Callable[[int, float, int], None] | None = None,
        *,
        threshold: float = LONG_PAUSE,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.threshold = threshold
        self.on_pause = on_pause or _log_pause
        self.timer = timer
        self.longest = 0.0
        self.long_pauses = 0
        self._started = 0.0
        # A collection made on purpose while no call is up (HeapKeeper): stalls nobody.
        self.idle = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.timer()
            return
        if self.idle:
            return
        seconds = self.timer() - self._started
        self.longest = max(self.longest, seconds)
        if seconds >= self.threshold:
            self.long_pauses += 1
            self.on_pause(int(info.get("generation", -1)), seconds, int(info.get("collected", 0)))

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)


class HeapKeeper:
    """Freezes the heap after a collection of an older generation while calls are up;
    unfreezes, collects once and freezes again once none is. `step()` every `period` s
    (`run()`); `live_calls` counts the process's calls. Process-wide: one per process, like
    the collector."""

    def __init__(
        self,
        live_calls: Callable[[], int],
        *,
        period: float = 1.0,
        pauses: GcPauses | None = None,
    ) -> None:
        """`pauses`: the pause monitor, told that the idle sweep's collection stalls nobody."""
        self.live_calls = live_calls
        self.period = period
        self.pauses = pauses
        self.freezes = 0  # survivors frozen while calls were up (metrics, tests)
        self.rebaselines = 0  # unfreeze + collect + freeze once idle
        self._aged = False  # a collection of generation 1 or 2 ran since the last step
        self._frozen_busy = False  # something was frozen since the process was last idle

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # Any thread's collection (STT workers collect too): a flag, nothing else, here.
        if phase == "stop" and info.get("generation", 0) >= 1:
            self._aged = True

    def step(self) -> None:
        if self.live_calls():
            if self._aged:
                self._aged = False
                gc.freeze()
                self.freezes += 1
                self._frozen_busy = True
        elif self._frozen_busy:
            self._frozen_busy = False
            gc.unfreeze()
            if self.pauses is not None:
                self.pauses.idle = True
            try:
                found = gc.collect()
            finally:
                if self.pauses is not None:
                    self.pauses.idle = False
            gc.freeze()
            self._aged = False
            self.rebaselines += 1
            event(log, "heap.rebaselined", collected=found, frozen=gc.get_freeze_count())

    async def run(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        try:
            while True:
                await asyncio.sleep(self.period)
                self.step()
        finally:
            while self in gc.callbacks:
                gc.callbacks.remove(self)


def _log_pause(generation: int, seconds: float, collected: int) -> None:
    event(
        log,
        "gc.pause",
        logging.WARNING,
        generation=generation,
        ms=round(1000 * seconds, 1),
        collected=collected,
        tracked=len(gc.get_objects()),
    )


# The process's one monitor: `callbridge serve` installs it, /metrics reads it.
PAUSES = GcPauses()
