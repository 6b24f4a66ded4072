"""One leg's shared media state and schedule (`LegCore`), the part of every transport's leg that
runs on every 20 ms tick: the caller's inputs, the agent's bounded playout, the tap, the end.

Its own module so that mypyc compiles it (callbridge.native): `put`, `pop` and the end check
run per leg per tick, and `transports.leg_base` (what transports subclass, so interpreted)
only wraps it. `inputs()` is an async iterator class, not an async generator, because mypyc
compiles no async generators.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.events import LegInput
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.media.playout import LEVEL_WINDOW_FRAMES, PlayoutQueue, UtteranceId
from callbridge.transports.media_clock import MediaClock, for_clock

__all__ = ["PLAYOUT_LIMIT_FRAMES", "LegCore"]

# 400 ms: enough to ride out scheduling hiccups, small enough to flush fast.
PLAYOUT_LIMIT_FRAMES = 20

_END = object()


class LegCore:
    """One leg's shared media state. Lives on the event loop; not thread-safe."""

    def __init__(
        self,
        info: LegInfo,
        clock: Clock,
        *,
        name: str = "",
        playout_limit_frames: int = PLAYOUT_LIMIT_FRAMES,
        level_window: int = LEVEL_WINDOW_FRAMES,
    ) -> None:
        self.info = info
        self.clock = clock
        self._media: MediaClock | None = None
        self.name = name  # names the leg in CallEnded before the calls layer gives it an id
        self.limit = playout_limit_frames
        self.playout = PlayoutQueue(level_window=level_window)
        self.tap: MediaTap | None = None
        self.end_reason = ""  # may be set before the end (a hang-up under way)
        self.samples_played = 0  # agent samples handed to the wire; the transport counts them
        self._inputs: asyncio.Queue[LegInput | object] = asyncio.Queue()
        self._sink: Callable[[LegInput], None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._blocked = False  # a play() waits for room: the tick that makes room wakes it
        self._ended = asyncio.Event()
        self._over = False  # _ended as a plain flag, read on every frame (no call)

    # ---- the caller's side ---------------------------------------------------------------

    def put(self, item: LegInput) -> None:
        """Hand the agent a caller frame, digit or hold change (from any callback)."""
        if self._over:
            return  # nobody reads after the end (inputs() stops at its marker)
        if self._sink is not None:
            self._sink(item)
            return
        self._inputs.put_nowait(item)

    def listen(self, sink: Callable[[LegInput], None]) -> None:
        """From now on hand inputs to `sink` as they arrive, in the media pass, instead of
        queueing them for `inputs()` (which then only ends with the leg). What was queued
        goes to the sink first, in order."""
        self._sink = sink
        while not self._inputs.empty():
            item = self._inputs.get_nowait()
            if item is _END:
                self._inputs.put_nowait(_END)
                self._sink = None  # as `finish` does: the leg is over
                return
            sink(item)  # type: ignore[arg-type]

    def inputs(self) -> AsyncIterator[LegInput]:
        """The caller's inputs in order, until the leg ends."""
        return _Inputs(self._inputs)

    # ---- the agent's side ----------------------------------------------------------------

    async def play(self, frame: AudioFrame, utterance: UtteranceId = 0) -> None:
        """Queue for the ticks; waits while `limit` frames are queued (back-pressure keeps a
        flush cheap); raises CallEnded once the leg ended, also while waiting."""
        while not self._over and len(self.playout) >= self.limit:
            self._room.clear()
            self._blocked = True
            waiter = asyncio.ensure_future(self._room.wait())
            ender = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                ender.cancel()
        if self._over:
            raise CallEnded(self.info.ids.get("call_id", self.name))
        self.playout.push(frame, utterance)

    def offer(self, frame: AudioFrame, utterance: UtteranceId = 0) -> bool:
        """`play` without waiting: False (and nothing queued) while `limit` frames are queued;
        raises CallEnded once the leg ended."""
        if self._over:
            raise CallEnded(self.info.ids.get("call_id", self.name))
        if len(self.playout) >= self.limit:
            return False
        self.playout.push(frame, utterance)
        return True

    def pop(self) -> tuple[AudioFrame, UtteranceId] | None:
        """The agent's frame for this tick (None: idle or held). Once per tick."""
        item = self.playout.pop()
        if self._blocked and len(self.playout) < self.limit:
            self._blocked = False
            self._room.set()
        return item

    def flush(self) -> int:
        dropped = self.playout.flush()
        self._room.set()
        return dropped

    # ---- the end -------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._over

    def finish(self, reason: str = "") -> bool:
        """End the leg: inputs() ends, play() raises, the tick loop stops at its next tick.
        The first reason given (here or in `end_reason`) stays. True the first time only."""
        if self._over:
            return False
        self.end_reason = self.end_reason or reason
        self._over = True
        self._ended.set()
        # The sink is the agent's closure, which holds the leg: keeping it would make a
        # reference cycle that only a full garbage collection (a pause of every call) frees.
        self._sink = None
        self._room.set()
        self._inputs.put_nowait(_END)
        return True

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # ---- the schedule --------------------------------------------------------------------

    async def tick_loop(
        self, on_tick: Callable[[float, int], float | None], *, limit: int | None = None
    ) -> None:
        """Call `on_tick(now, missed)` every 20 ms until the leg ends or `limit` ticks ran, on
        the process's one media clock (transports.media_clock: absolute deadlines, one pass
        for every leg). `missed` counts the ticks a stall skipped (0 normally): a recording
        keeps wall time with them. `on_tick` may return how many seconds earlier the leg
        wants its ticks from now on (its frames are due that much before it ticks)."""
        await self.media.ticks(on_tick, self._is_over, limit=limit)

    def _is_over(self) -> bool:
        return self._over

    @property
    def media(self) -> MediaClock:
        """The process's media clock this leg ticks on."""
        media = self._media
        if media is None:
            media = self._media = for_clock(self.clock)
        return media


class _Inputs:
    """`LegCore.inputs()`: the queue's items until the end marker (which it consumes)."""

    def __init__(self, queue: asyncio.Queue[LegInput | object]) -> None:
        self._queue = queue
        self._done = False

    def __aiter__(self) -> _Inputs:
        return self

    async def __anext__(self) -> LegInput:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        return item  # type: ignore[return-value]
