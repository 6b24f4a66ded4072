"""The echo agent: plays back what it hears after a fixed delay (a media-path check)."""

from __future__ import annotations

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


class EchoAgent:
    def __init__(self, delay_ms: int = 0) -> None:
        # The delay is a whole number of frames; the jitter buffer and pacing add their own ~40 ms.
        self.delay_frames = max(0, round(delay_ms / FRAME_MS))
        self._line_frames = self.delay_frames - min(self.delay_frames, PLAYOUT_CUSHION_FRAMES)

    async def run(self, leg: CallLeg) -> None:
        # The echo rides the leg's media tick (CallLeg.listen): no task wakes per frame, and
        # the 20 ms pass that hears a frame also queues its echo. The cushion still starts the
        # echo (a transport whose tick reads the caller after sending keeps the same delay).
        line: collections.deque[AudioFrame] = collections.deque()
        cushion = self.delay_frames - self._line_frames

        def hear(item: LegInput) -> None:
            nonlocal cushion
            if isinstance(item, AudioFrame):
                line.append(item)
                if len(line) > self._line_frames:
                    for _ in range(cushion):
                        leg.offer(AudioFrame.silence())
                    cushion = 0
                    # Full only while playout is held: the echo drops rather than fall behind.
                    leg.offer(line.popleft())
            elif isinstance(item, DtmfDigit):
                log.debug("echo heard digit %s", item.digit)

        leg.listen(hear)
        with contextlib.suppress(CallEnded):
            await leg.wait_ended()
