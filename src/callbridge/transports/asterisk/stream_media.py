"""Media shared by the legs whose peer streams raw audio in real time over a reliable socket
(AudioSocket over TCP, chan_websocket over a WebSocket): no timestamps, no loss, but gaps
when the peer's channel has nothing to send and bursts after a stall.

`CallerStream` turns what arrives (any rate, any chunk size) into 20 ms pipeline frames and
keeps the agent's input paced against the leg's ticks: frames that arrive are delivered at
once; a peer more than `slack` late gets concealed silence (a turn detector needs silence
to end a turn, and the peer may simply send nothing while the caller is quiet); audio more
than `max_ahead` ahead of real time is dropped (a burst must not buy the caller a backlog).

`AgentStream` converts the agent's pipeline frames to the peer's rate and, for peers that
take only whole frames of a fixed size, holds back the remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.audio.resample import Resampler
from callbridge.core.frames import FRAME_BYTES, PIPELINE_RATE, AudioFrame
from callbridge.transports.leg_base import TICK

__all__ = ["AgentStream", "CallerStats", "CallerStream"]


@dataclass(slots=True)
class CallerStats:
    frames: int = 0  # delivered, concealed ones included
    concealed_frames: int = 0
    ahead_frames: int = 0  # dropped: further ahead of real time than max_ahead


class CallerStream:
    def __init__(self, slack_frames: int = 3, max_ahead_frames: int = 50) -> None:
        self.slack = slack_frames
        self.max_ahead = max_ahead_frames
        self.stats = CallerStats()
        self.rate = 0  # the peer's rate, once audio says it
        self._resampler: Resampler | None = None
        self._pending = b""
        self._start: float | None = None

    def _expected(self, now: float) -> int:
        """Frames real time owes the agent since the first audio."""
        if self._start is None:
            return 0
        return int((now - self._start) / TICK + 1e-9) + 1

    def receive(self, pcm: bytes, rate: int, now: float) -> list[AudioFrame]:
        if rate != self.rate or self._resampler is None:
            self.rate = rate
            self._resampler = Resampler(rate, PIPELINE_RATE)
        if self._start is None:
            self._start = now
        self._pending += self._resampler.feed(pcm)
        out: list[AudioFrame] = []
        limit = self._expected(now) + self.max_ahead
        while len(self._pending) >= FRAME_BYTES:
            frame, self._pending = self._pending[:FRAME_BYTES], self._pending[FRAME_BYTES:]
            if self.stats.frames >= limit:
                self.stats.ahead_frames += 1
                continue
            self.stats.frames += 1
            out.append(AudioFrame(frame))
        return out

    def tick(self, now: float) -> list[AudioFrame]:
        """Concealed silence for the frames the peer is more than `slack` late with."""
        out: list[AudioFrame] = []
        owed = self._expected(now) - self.slack
        while self._start is not None and self.stats.frames < owed:
            self.stats.frames += 1
            self.stats.concealed_frames += 1
            out.append(AudioFrame(bytes(FRAME_BYTES), concealed=True))
        return out


class AgentStream:
    """Pipeline frames -> the peer's rate, cut in `frame_bytes` pieces (0: any size)."""

    def __init__(self, rate: int = PIPELINE_RATE, frame_bytes: int = 0) -> None:
        self.rate = rate
        self.frame_bytes = frame_bytes
        self._resampler = Resampler(PIPELINE_RATE, rate)
        self._pending = b""

    def set_rate(self, rate: int, frame_bytes: int | None = None) -> None:
        if rate != self.rate:
            self.rate = rate
            self._resampler = Resampler(PIPELINE_RATE, rate)
            self._pending = b""
        if frame_bytes is not None:
            self.frame_bytes = frame_bytes

    def convert(self, pcm: bytes) -> list[bytes]:
        """What to send for this frame of the agent: nothing, one piece, or more."""
        data = self._pending + self._resampler.feed(pcm)
        if not self.frame_bytes:
            self._pending = b""
            return [data] if data else []
        whole = len(data) - len(data) % self.frame_bytes
        self._pending = data[whole:]
        return [data[i : i + self.frame_bytes] for i in range(0, whole, self.frame_bytes)]

    def drop(self) -> None:
        """Barge-in: what is held back is not sent."""
        self._pending = b""
        self._resampler.reset()
