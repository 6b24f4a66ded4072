"""What comes in on a Twilio media stream, sans-IO: the message limits (`InboundGuard`) and
the caller's audio as one 20 ms PCM frame per 20 ms of stream time (`CallerAudio`).

`InboundGuard` judges each WebSocket message before it is parsed: one over `max_message_bytes`
(a media message is ~1 KB of JSON) is refused with close code 1009, and more than
`max_messages_per_s` messages or `max_bytes_per_s` bytes within one second with 1008, so no
peer can make the reader parse without bound (and a `stop` never waits behind a backlog).

Frames go out the moment their payload arrives (barge-in latency: no buffering ahead of the
agent). Each payload is placed by its `media.timestamp` (ms of stream time), not by arrival:
when Twilio skips audio it never received, the timestamp jumps and the hole is concealed.
When the socket stalls, `tick(now)` conceals the frames that are overdue by more than `slack`,
so the agent still gets one frame per 20 ms; their real payloads, arriving late in a burst,
are then dropped (they were replaced), and the timeline re-anchors on the new delay.

Arrival times are judged against an anchor: the earliest-seen (arrival, stream position)
pair, i.e. the fastest path through the network. A frame arriving earlier than the anchor
predicts moves it there; a frame arriving after it was concealed moves it too (the delay grew).

Received audio may run at most `max_ahead` (1 s) ahead of real time: payloads are paid for
from a credit of samples that refills at the real-time rate, capped at `max_ahead`, and one
that does not fit is dropped before it is decoded (counted), as is any payload longer than
`max_ahead`. So a flood of timestamps (or of gaps to fill) can never queue minutes of audio
for the agent; concealment by `tick` is paced by real time already and needs no credit.

Sans-IO: payloads and `now` in, frames out. Concealment is G.711 Appendix I (audio/plc.py).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from callbridge.audio.g711 import ulaw_decode
from callbridge.audio.plc import Concealer
from callbridge.core.frames import FRAME_SAMPLES, PIPELINE_RATE, AudioFrame

__all__ = [
    "MAX_BYTES_PER_S",
    "MAX_MESSAGES_PER_S",
    "MAX_MESSAGE_BYTES",
    "CallerAudio",
    "CallerAudioStats",
    "InboundGuard",
    "Refusal",
    "message_size",
]

_SAMPLES_PER_MS = PIPELINE_RATE // 1000
_FRAME_BYTES = 2 * FRAME_SAMPLES
# Credit refills this much faster than our clock: the sender's clock may run fast (telephony
# clocks are good to +-100 ppm) and a long call must not end up dropping audio for it.
_DRIFT = 1.01

MAX_MESSAGE_BYTES = 65536  # Twilio's media messages are ~1 KB; `start` a few KB at most
MAX_MESSAGES_PER_S = 500  # Twilio sends 50/s, and a burst after a stall stays far below
MAX_BYTES_PER_S = 1 << 20  # ~25 KB/s is the real rate


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream is closed: the WebSocket close code and reason, and the leg's end reason."""

    code: int  # RFC 6455 §7.4.1
    reason: str  # <= 123 bytes (RFC 6455 §5.5.1)
    end_reason: str


def message_size(text: str | bytes) -> int:
    """The message's size in bytes as sent (UTF-8), without copying a long one."""
    if isinstance(text, bytes | bytearray) or text.isascii():
        return len(text)
    return len(text.encode("utf-8"))


class InboundGuard:
    """Size and rate limits of one stream's messages (Twilio -> us), judged before parsing."""

    def __init__(
        self,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_messages_per_s: int = MAX_MESSAGES_PER_S,
        max_bytes_per_s: int = MAX_BYTES_PER_S,
    ) -> None:
        if min(max_message_bytes, max_messages_per_s, max_bytes_per_s) <= 0:
            raise ValueError("message limits must be > 0")
        self.max_message_bytes = max_message_bytes
        self.max_messages_per_s = max_messages_per_s
        self.max_bytes_per_s = max(max_bytes_per_s, max_message_bytes)  # one allowed message fits
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._window_bytes = 0

    def check(self, text: str | bytes, now: float) -> Refusal | None:
        """None if the message may be parsed; else why the stream must close."""
        # More characters than the limit is more bytes too: no need to measure a huge one.
        size = len(text) if len(text) > self.max_message_bytes else message_size(text)
        if size > self.max_message_bytes:
            return Refusal(
                1009,  # RFC 6455 §7.4.1: message too big to process
                f"message too big: {size} bytes, limit {self.max_message_bytes}",
                "message_too_big",
            )
        window = self._window
        while window and window[0][0] <= now - 1.0:
            self._window_bytes -= window.popleft()[1]
        window.append((now, size))
        self._window_bytes += size
        if len(window) > self.max_messages_per_s:
            why = f"over {self.max_messages_per_s} messages/s"
        elif self._window_bytes > self.max_bytes_per_s:
            why = f"over {self.max_bytes_per_s} bytes/s"
        else:
            return None
        return Refusal(1008, f"rate limit: {why}", "rate_limit")  # §7.4.1: policy violation


@dataclass(slots=True)
class CallerAudioStats:
    payloads: int = 0
    frames: int = 0  # frames handed out, concealed or not
    concealed_frames: int = 0  # frames holding any concealment
    late_payloads: int = 0  # arrived after their time had been concealed (dropped)
    resyncs: int = 0  # implausible timestamp jumps, followed without concealing
    ahead_payloads: int = 0  # dropped undecoded: more than max_ahead ahead of real time
    ahead_samples: int = 0  # ... the audio they held
    oversized_payloads: int = 0  # dropped undecoded: longer than max_ahead


class CallerAudio:
    def __init__(
        self, *, slack: float = 0.06, max_fill: float = 1.0, max_ahead: float = 1.0
    ) -> None:
        if slack < 0 or max_fill <= 0 or max_ahead < FRAME_SAMPLES / PIPELINE_RATE:
            raise ValueError("slack must be >= 0, max_fill > 0 and max_ahead >= one frame")
        self.slack = slack
        self.max_fill_samples = round(max_fill * PIPELINE_RATE)
        self.max_ahead_samples = round(max_ahead * PIPELINE_RATE)
        self.stats = CallerAudioStats()
        self._credit = float(self.max_ahead_samples)  # samples `receive` may still hand out
        self._credit_at = 0.0
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

    def _pay(self, start: int, end: int, now: float) -> bool:
        """Take what this payload adds (its new audio and any fill) from the credit; False when
        the credit does not cover it (the payload is then dropped, counted)."""
        if self._next is None:
            self._credit_at = now
        refill = max(0.0, now - self._credit_at) * PIPELINE_RATE * _DRIFT
        self._credit = min(float(self.max_ahead_samples), self._credit + refill)
        self._credit_at = max(self._credit_at, now)
        cost = end - start
        if self._next is not None and 0 < start - self._next <= self.max_fill_samples:
            cost = end - self._next  # the gap is filled too
        elif self._next is not None and start < self._next:
            cost = max(0, end - self._next)  # an overlap adds only its new part
        if cost > self._credit:
            self.stats.ahead_payloads += 1
            self.stats.ahead_samples += end - start
            return False
        self._credit -= cost
        return True

    def receive(self, timestamp_ms: int, payload: bytes, now: float) -> list[AudioFrame]:
        """A µ-law payload whose first sample is at `timestamp_ms`; returns frames to deliver."""
        self.stats.payloads += 1
        if len(payload) > self.max_ahead_samples:  # µ-law: one byte per sample
            self.stats.oversized_payloads += 1
            return []
        start = timestamp_ms * _SAMPLES_PER_MS
        end = start + len(payload)
        if not self._pay(start, end, now):
            return []  # the anchor stays: this arrival says nothing about the network path
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
        pcm = ulaw_decode(payload)
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
