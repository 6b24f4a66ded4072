"""What every transport's call leg shares, so that a new transport writes only its wire.

`LegCore` (transports.leg_core, compiled with the media path) is the state and the schedule:
the caller's inputs queue, the agent's bounded playout with per-utterance position
(media.playout), the tap for recording, the end (reason, `wait_ended`) and the paced 20 ms
ticks on the process's media clock (transports.media_clock). `LegBase` is the thin base that
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

from callbridge.core.events import LegInput, TransferResult
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.transports.leg_core import PLAYOUT_LIMIT_FRAMES, LegCore
from callbridge.transports.media_clock import STALL, TICK

__all__ = ["PLAYOUT_LIMIT_FRAMES", "STALL", "TICK", "LegBase", "LegCore"]


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
