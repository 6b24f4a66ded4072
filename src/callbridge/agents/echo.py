"""The echo agent: plays back what it hears after a fixed delay (a media-path check)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegInput
from callbridge.core.frames import FRAME_MS, AudioFrame
from callbridge.core.ports import CallLeg

log = logging.getLogger("callbridge.agents.echo")


# Frames of the delay spent queued in the leg's playout rather than in the agent's own line:
# the leg sends one frame per tick whether or not this task has run, so a task that wakes a
# tick or two late (a busy machine) would otherwise leave a 20 ms hole and push the rest of
# the echo later for good. The echo starts with that many frames of silence queued; from then
# on every frame heard is queued that many ticks before it is due, and goes out on time.
PLAYOUT_CUSHION_FRAMES = 3
# At most 15 s of echo waits for playout room; older frames give way.
BACKLOG_LIMIT_FRAMES = 750


class EchoAgent:
    def __init__(self, delay_ms: int = 0) -> None:
        # The delay is a whole number of frames; the jitter buffer and pacing add their own
        # ~10-15 ms (transports.media_clock phases).
        self.delay_frames = max(0, round(delay_ms / FRAME_MS))
        self._line_frames = self.delay_frames - min(self.delay_frames, PLAYOUT_CUSHION_FRAMES)

    async def run(self, leg: CallLeg) -> None:
        # The echo rides the leg's media tick (CallLeg.listen): no task wakes per frame, and
        # the 20 ms pass that hears a frame also queues its echo. Only when playout is full
        # (audio that arrives in bursts, as over Twilio's WebSocket; a held playout) do frames
        # wait in a backlog, which a task started for it then plays as room appears, in
        # order: nothing dropped. While the playout has room the call holds no task but this
        # one, waiting for the end (fewer objects for the garbage collector to walk).
        line = _EchoLine(leg, self._line_frames, self.delay_frames - self._line_frames)
        leg.listen(line.hear)
        try:
            await leg.wait_ended()
        finally:
            await line.close()


class _EchoLine:
    """One call's echo: what it heard, waiting out the delay, and what waits for playout room.
    A class, not closures, so that mypyc compiles it (callbridge.native) without a reference
    cycle per call: a compiled closure's environment and its functions point at each other."""

    def __init__(self, leg: CallLeg, line_frames: int, cushion: int) -> None:
        self.leg = leg
        self.line_frames = line_frames
        self.cushion = cushion
        self.line: collections.deque[AudioFrame] = collections.deque()
        self.backlog: collections.deque[AudioFrame] = collections.deque()
        self.player: asyncio.Task[None] | None = None

    def hear(self, item: LegInput) -> None:
        if isinstance(item, AudioFrame):
            line = self.line
            line.append(item)
            if len(line) > self.line_frames:
                for _ in range(self.cushion):
                    self.emit(AudioFrame.silence())
                self.cushion = 0
                self.emit(line.popleft())
        elif isinstance(item, DtmfDigit):
            log.debug("echo heard digit %s", item.digit)

    def emit(self, frame: AudioFrame) -> None:
        # Behind a backlog (or the frame the player is handing over) a frame queues too.
        player = self.player
        playing = player is not None and not player.done()
        backlog = self.backlog
        if playing or backlog or not self.leg.offer(frame):
            if len(backlog) >= BACKLOG_LIMIT_FRAMES:
                backlog.popleft()  # bounded: a playout held for minutes must not grow memory
            backlog.append(frame)
            if not playing:
                self.player = asyncio.get_running_loop().create_task(self.play_backlog())

    async def play_backlog(self) -> None:
        with contextlib.suppress(CallEnded):  # the end stops it; nothing is left to play
            while self.backlog:
                await self.leg.play(self.backlog.popleft())

    async def close(self) -> None:
        """The call ended: the player (owned here) ends with it."""
        player, self.player = self.player, None
        if player is not None:
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
