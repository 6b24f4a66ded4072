"""The agent's audio on its way to the caller: what the agent socket does between a `media`
message and the leg.

The agent's audio is buffered (agents.agent_audio.AgentAudio, bounded by `max_buffer`), fed
into the leg's playout queue one 20 ms frame at a time (`leg.play` waits while that queue is
full), with a cushion when it starts from silence and a short wait for the rest of a partial
frame; each mark is echoed once the leg has played the audio before it. The socket protocol
itself (messages, connect, close) stays in agents.twilio_socket.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from callbridge.agents.agent_audio import AgentAudio
from callbridge.agents.twilio_socket_config import TwilioSocketConfig
from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.frames import FRAME_MS, FRAME_SAMPLES, PIPELINE_RATE
from callbridge.core.ports import CallLeg

__all__ = ["TICK", "SocketPlayer"]

TICK = FRAME_MS / 1000
_IDLE_WAIT = 1.0  # an idle task re-checks this often (bounded waits, nothing depends on it)


class SocketPlayer:
    """One session's agent audio: buffer, feeder task and mark echoes. `counts` is the
    session's counter (frames_in is counted here)."""

    def __init__(
        self,
        config: TwilioSocketConfig,
        clock: Clock,
        leg: CallLeg,
        counts: collections.Counter[str],
    ) -> None:
        self.config = config
        self.clock = clock
        self.leg = leg
        self.audio = AgentAudio(round(config.max_buffer * PIPELINE_RATE))
        self._counts = counts
        self._data = asyncio.Event()  # the agent sent audio, a mark or a clear
        self._marks = asyncio.Event()  # a mark is waiting for its audio to play
        self._run_from = 0.0  # when audio came into an empty buffer (the cushion's start)

    # ---- from the agent -------------------------------------------------------------------

    def media(self, pcm: bytes) -> bool:
        """Buffer the agent's audio; True if the oldest not yet played had to be dropped."""
        if not self.audio.buffered_samples:
            self._run_from = self.clock.now()
        overflowed = bool(self.audio.audio(pcm))
        self._data.set()
        return overflowed

    def mark(self, name: str) -> None:
        self.audio.mark(name)
        self._data.set()
        self._marks.set()

    def clear(self) -> tuple[int, list[str]]:
        """Drop the buffer and the leg's queue at once (samples dropped, marks to echo)."""
        dropped, names = self.audio.clear()
        dropped += self.leg.flush_playout()
        self._data.set()
        return dropped, names

    # ---- to the leg -----------------------------------------------------------------------

    async def _wait(self, flag: asyncio.Event, timeout: float) -> bool:
        flag.clear()
        try:
            async with asyncio.timeout(timeout):
                await flag.wait()
        except TimeoutError:
            return False
        return True

    async def feed(self) -> None:
        """Buffer -> leg, one frame at a time; `leg.play` waits while the leg's queue is full."""
        cushion = round(self.config.cushion * PIPELINE_RATE)
        while not self.leg.ended:
            buffered = self.audio.buffered_samples
            if 0 < buffered < cushion and self._dry():
                wait = self._run_from + self.config.cushion - self.clock.now()
                if wait > 0:
                    await self._wait(self._data, wait)
                    continue
            frame = self.audio.frame()
            if frame is None:
                partial = self.audio.partial
                came = await self._wait(
                    self._data, self.config.partial_wait if partial else _IDLE_WAIT
                )
                if came or not partial:
                    continue
                if not self._dry(FRAME_SAMPLES):
                    continue  # the leg still has audio to play: the rest may yet come
                frame = self.audio.frame(pad=True)  # the rest did not come: play what there is
                if frame is None:
                    continue
            utterance = self.audio.utterance
            try:
                await self.leg.play(frame, utterance)
            except CallEnded:
                return
            if self.audio.utterance != utterance:
                # A clear came while play() waited for room: the frame went in after the
                # flush. It is the only one queued (this task is the only feeder): drop it.
                self.leg.flush_playout()
            self._counts["frames_in"] += 1

    def _dry(self, margin: int = 0) -> bool:
        """The leg has at most `margin` samples of ours left to play."""
        return self.audio.fed - self.leg.played(self.audio.utterance) <= margin

    async def echo_marks(self, echo: Callable[[str], Awaitable[bool]]) -> None:
        """Echo each mark once the leg has played the audio before it (polled per tick);
        stops when `echo` fails (the socket is gone)."""
        while not self.leg.ended:
            if not self.audio.marks_pending:
                await self._wait(self._marks, _IDLE_WAIT)
                continue
            for name in self.audio.due(self.leg.played(self.audio.utterance)):
                if not await echo(name):
                    return
            await self.clock.sleep_until(self.clock.now() + TICK)
