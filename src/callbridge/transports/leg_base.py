"""What every transport's call leg shares, so that a new transport writes only its wire.

`LegCore` is the state and the schedule: the caller's inputs queue, the agent's bounded
playout with per-utterance position (media.playout), the tap for recording, the end (reason,
`wait_ended`) and the paced 20 ms ticks on the process's media clock (transports.media_clock). `LegBase` is the thin base that
turns a core into the `core.ports.CallLeg` surface; a transport subclasses it, feeds
`core.put()` from its receive path, calls `core.pop()` once per tick from `core.tick_loop()`,
and adds its own control (DTMF, transfer, hang-up) and `run()`.

Control (flush, pause, hang-up) acts at once and never waits behind queued audio: playout
position is decided on the tick, so the next tick already sends what control left.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.events import LegInput, TransferResult
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.media.playout import LEVEL_WINDOW_FRAMES, PlayoutQueue, UtteranceId
from callbridge.transports.media_clock import STALL, TICK, MediaClock, for_clock

__all__ = ["PLAYOUT_LIMIT_FRAMES", "STALL", "TICK", "LegBase", "LegCore"]

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

    async def inputs(self) -> AsyncIterator[LegInput]:
        while True:
            item = await self._inputs.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]

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


class LegBase(abc.ABC):
    """The CallLeg surface over a LegCore. Subclasses add their wire: `run()`, DTMF, transfer,
    hang-up, stats, and override what their transport knows better (e.g. `played` from
    Twilio's mark echoes)."""

    def __init__(self, core: LegCore) -> None:
        self.core = core

    @property
    def info(self) -> LegInfo:
        return self.core.info

    @property
    def ended(self) -> bool:
        return self.core.ended

    @property
    def end_reason(self) -> str:
        return self.core.end_reason

    def inputs(self) -> AsyncIterator[LegInput]:
        return self.core.inputs()

    async def play(self, frame: AudioFrame, utterance: int = 0) -> None:
        await self.core.play(frame, utterance)

    def listen(self, sink: Callable[[LegInput], None]) -> None:
        self.core.listen(sink)

    def offer(self, frame: AudioFrame, utterance: int = 0) -> bool:
        return self.core.offer(frame, utterance)

    def flush_playout(self) -> int:
        # Takes effect at once: the next tick sends nothing of the dropped audio.
        return self.core.flush()

    def pause_playout(self, paused: bool) -> None:
        self.core.playout.hold(paused)  # the next tick sends (or withholds) accordingly

    def played(self, utterance: int) -> int:
        return self.core.playout.played(utterance)

    @property
    def samples_played(self) -> int:
        return self.core.samples_played

    @property
    def playing(self) -> bool:
        return self.core.playout.playing

    @property
    def playback_dbfs(self) -> float:
        return self.core.playout.peak_dbfs

    def set_tap(self, tap: MediaTap | None) -> None:
        """See every media tick from the next one on (a recorder); None: stop."""
        self.core.tap = tap

    async def wait_ended(self) -> None:
        await self.core.wait_ended()

    async def run_beside_ticks(
        self,
        on_tick: Callable[[float, int], None],
        workers: dict[str, Callable[[], Coroutine[Any, Any, None]]],
        *,
        finish: Callable[[str], object] | None = None,
        close: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        """The shape of a streaming leg's `run()`: its wire's tasks (readers, writers,
        pollers; named by the keys) beside the paced ticks, in one TaskGroup, until the leg
        ends. Cancelled: the leg ends "cancelled"; a task failed: "error" (`finish`, by
        default the core's; the first reason stays). `close` runs last, whatever happened."""
        end = finish or self.core.finish
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(make(), name=f"{self.core.name}-{label}")
                    for label, make in workers.items()
                ]
                try:
                    await self.core.tick_loop(on_tick)
                finally:
                    for task in tasks:
                        task.cancel()
        except asyncio.CancelledError:
            end("cancelled")
            raise
        finally:
            end("error")  # no-op unless a task failed
            if close is not None:
                closing = close()
                if inspect.isawaitable(closing):
                    await closing

    @abc.abstractmethod
    async def run(self) -> None:
        """Drive the leg until it ends. Owned by the call's TaskGroup."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int | float]: ...

    @abc.abstractmethod
    async def send_dtmf(self, digits: str) -> None: ...

    @abc.abstractmethod
    async def transfer(self, target: str) -> TransferResult: ...

    @abc.abstractmethod
    async def hangup(self, reason: str = "normal") -> None: ...
