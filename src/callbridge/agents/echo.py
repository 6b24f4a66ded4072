"""The echo agent: plays back what it hears after a fixed delay (a media-path check)."""

from __future__ import annotations

import collections
import logging

from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import FRAME_MS, AudioFrame
from callbridge.core.ports import CallLeg

log = logging.getLogger("callbridge.agents.echo")


class EchoAgent:
    def __init__(self, delay_ms: int = 0) -> None:
        # The delay is a whole number of frames; the jitter buffer and pacing add their own ~40 ms.
        self.delay_frames = max(0, round(delay_ms / FRAME_MS))

    async def run(self, leg: CallLeg) -> None:
        line: collections.deque[AudioFrame] = collections.deque()
        try:
            async for item in leg.inputs():
                if isinstance(item, AudioFrame):
                    line.append(item)
                    if len(line) > self.delay_frames:
                        await leg.play(line.popleft())
                elif isinstance(item, DtmfDigit):
                    log.debug("echo heard digit %s", item.digit)
        except CallEnded:
            return
