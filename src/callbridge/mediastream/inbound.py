"""The caller's audio from Twilio as one 20 ms PCM frame per 20 ms of stream time.

Frames go out the moment their payload arrives (barge-in latency: no buffering ahead of the
agent). Each payload is placed by its `media.timestamp` (ms of stream time), not by arrival:
when Twilio skips audio it never received, the timestamp jumps and the hole is concealed.
When the socket stalls, `tick(now)` conceals the frames that are overdue by more than `slack`,
so the agent still gets one frame per 20 ms; their real payloads, arriving late in a burst,
are then dropped (they were replaced), and the timeline re-anchors on the new delay.

Arrival times are judged against an anchor: the earliest-seen (arrival, stream position)
pair, i.e. the fastest path through the network. A frame arriving earlier than the anchor
predicts moves it there; a frame arriving after it was concealed moves it too (the delay grew).

Sans-IO: payloads and `now` in, frames out. Concealment is G.711 Appendix I (audio/plc.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.audio.g711 import ulaw_decode
from callbridge.audio.plc import Concealer
from callbridge.core.frames import FRAME_SAMPLES, PIPELINE_RATE, AudioFrame

__all__ = ["CallerAudio", "CallerAudioStats"]

_SAMPLES_PER_MS = PIPELINE_RATE // 1000
_FRAME_BYTES = 2 * FRAME_SAMPLES


@dataclass(slots=True)
class CallerAudioStats:
    payloads: int = 0
    frames: int = 0  # frames handed out, concealed or not
    concealed_frames: int = 0  # frames holding any concealment
    late_payloads: int = 0  # arrived after their time had been concealed (dropped)
    resyncs: int = 0  # implausible timestamp jumps, followed without concealing


class CallerAudio:
    def __init__(self, *, slack: float = 0.06, max_fill: float = 1.0) -> None:
        if slack < 0 or max_fill <= 0:
            raise ValueError("slack must be >= 0 and max_fill > 0")
        self.slack = slack
        self.max_fill_samples = round(max_fill * PIPELINE_RATE)
        self.stats = CallerAudioStats()
        self._plc = Concealer(PIPELINE_RATE)
        self._carry = b""  # decoded samples of the frame being assembled
        self._carry_concealed = False
        self._next: int | None = None  # stream position (samples) of the next sample expected
        self._anchor_at = 0.0  # arrival time ...
        self._anchor_pos = 0  # ... of the stream position (a payload's end) it anchors

    @property
    def started(self) -> bool:
        return self._next is not None

    def _anchor(self, now: float, end: int) -> None:
        self._anchor_at, self._anchor_pos = now, end

    def _expected(self, end: int) -> float:
        """When audio ending at stream position `end` arrives on the anchor's path."""
        return self._anchor_at + (end - self._anchor_pos) / PIPELINE_RATE

    def receive(self, timestamp_ms: int, payload: bytes, now: float) -> list[AudioFrame]:
        """A µ-law payload whose first sample is at `timestamp_ms`; returns frames to deliver."""
        self.stats.payloads += 1
        pcm = ulaw_decode(payload)
        start = timestamp_ms * _SAMPLES_PER_MS
        end = start + len(pcm) // 2
        if self._next is None:
            self._next = start
            self._anchor(now, end)
        elif now < self._expected(end):
            self._anchor(now, end)  # a faster path than the anchor's
        if end <= self._next:
            # Its time was concealed already (or a duplicate): the delay grew, follow it.
            self.stats.late_payloads += 1
            self._anchor(now, end)
            return []
        out: list[AudioFrame] = []
        gap = start - self._next
        if gap > self.max_fill_samples:
            # Not a loss Twilio could produce while time passed: follow the new timeline.
            self.stats.resyncs += 1
            self._next = start
            self._anchor(now, end)
        elif gap > 0:
            out += self._fill(gap)
        elif gap < 0:
            pcm = pcm[-2 * gap :]  # the part already covered (concealed) is dropped
        out += self._push(self._plc.good(pcm), concealed=False)
        return out

    def tick(self, now: float) -> list[AudioFrame]:
        """Conceal every frame overdue at `now`: a stalled socket still yields 20 ms frames."""
        out: list[AudioFrame] = []
        if self._next is None:
            return out
        while True:
            frame_end = self._next - len(self._carry) // 2 + FRAME_SAMPLES
            if now < self._expected(frame_end) + self.slack:
                return out
            out += self._fill(frame_end - self._next)

    def _fill(self, samples: int) -> list[AudioFrame]:
        return self._push(self._plc.conceal(samples), concealed=True)

    def _push(self, pcm: bytes, *, concealed: bool) -> list[AudioFrame]:
        assert self._next is not None
        self._next += len(pcm) // 2
        self._carry += pcm
        self._carry_concealed |= concealed and bool(pcm)
        out: list[AudioFrame] = []
        while len(self._carry) >= _FRAME_BYTES:
            chunk, self._carry = self._carry[:_FRAME_BYTES], self._carry[_FRAME_BYTES:]
            out.append(AudioFrame(chunk, concealed=self._carry_concealed))
            self.stats.frames += 1
            self.stats.concealed_frames += self._carry_concealed
            # What is left over came from the last push only.
            self._carry_concealed = concealed and bool(self._carry)
        return out
