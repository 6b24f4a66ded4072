"""A WebRTC peer (a browser) as a CallLeg: the caller's decoded audio in, the agent's out.

The leg base (transports.leg_base) owns the inputs, the bounded playout, the tap, the end and
the paced 20 ms ticks. This module adds what a WebRTC peer needs, over a `MediaPeer` (the
peer-connection machinery, transports.webrtc: ICE, DTLS-SRTP, codecs), so that the leg runs
on fake time in tests with a fake peer:

- every tick hands the peer one 20 ms frame (the agent's, in-band DTMF, or silence: a
  browser's jitter buffer copes best with a steady stream), resampled from the pipeline's
  8 kHz to the codec's rate (48 kHz for Opus, none for G.711). The peer keeps at most a
  couple of frames queued, so a flush (barge-in) is heard within a frame or two;
- the peer's decoded caller audio is resampled to 8 kHz and cut into 20 ms frames for the
  agent as it arrives (the peer's jitter buffer has paced it already);
- DTMF: aiortc negotiates no telephone-event (RFC 4733), so a browser sends keys as JSON on
  the data channel ({"type": "dtmf", "digit": "5"}); ours go in-band (as on Twilio) and as
  the same message, so a page can show them;
- the end: the peer connection closing is the caller's hang-up (`remote_bye`), ICE/DTLS
  failing (consent lost, RFC 7675) or no caller audio for `media_timeout` is `media_timeout`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Protocol

from callbridge.audio.resample import Resampler
from callbridge.audio.tones import dtmf_tone
from callbridge.core.clock import Clock
from callbridge.core.errors import TransportError
from callbridge.core.events import DtmfDigit, TransferResult
from callbridge.core.frames import FRAME_BYTES, FRAME_MS, PIPELINE_RATE, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.transports.leg_base import TICK, LegBase, LegCore

__all__ = [
    "DTMF_KEYS",
    "MAX_MESSAGE_CHARS",
    "MediaPeer",
    "PeerClosed",
    "PeerEvent",
    "PeerMessage",
    "PeerState",
    "WebRtcLeg",
    "WebRtcLegConfig",
    "parse_message",
]

log = logging.getLogger("callbridge.transports.webrtc.transport")

DTMF_KEYS = frozenset("0123456789*#ABCD")
MAX_MESSAGE_CHARS = 512  # a data-channel message longer than this is not ours: dropped
_TAP_CALLER_LAG = 5  # caller frames a tap may fall behind (a burst) before the oldest go


class PeerClosed(TransportError):
    """The peer's media ended (its track stopped or the connection closed)."""


@dataclass(frozen=True, slots=True)
class PeerState:
    """The peer connection's state changed (W3C webrtc-pc `RTCPeerConnectionState`)."""

    state: str


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """A text message on the data channel."""

    text: str


PeerEvent = PeerState | PeerMessage


class MediaPeer(Protocol):
    """What the leg needs of a negotiated peer connection."""

    @property
    def sample_rate(self) -> int:
        """The rate of the PCM16 mono this peer takes and gives (the codec's)."""
        ...

    @property
    def codec(self) -> str:
        """The negotiated audio codec ("opus", "PCMU", "PCMA")."""
        ...

    def send(self, pcm: bytes) -> None:
        """Queue one 20 ms frame; the queue is shallow and drops its oldest when full."""
        ...

    def clear(self) -> int:
        """Drop queued frames not yet encoded; returns how many."""
        ...

    async def receive(self) -> bytes:
        """The caller's next decoded audio (PCM16 mono at `sample_rate`); raises PeerClosed."""
        ...

    async def next_event(self) -> PeerEvent:
        """The next state change or data-channel message; raises PeerClosed."""
        ...

    def send_message(self, text: str) -> None:
        """Send on the data channel if it is open (dropped otherwise)."""
        ...

    async def stats(self) -> dict[str, int | float]:
        """Counters from the peer connection's statistics (bytes, packets, jitter)."""
        ...

    async def close(self) -> None:
        """Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class WebRtcLegConfig:
    playout_limit_frames: int = 20  # local queue: 400 ms, then play() waits
    level_window: int = 30  # frames of playback level for the barge-in echo guard (600 ms)
    media_timeout: float = 30.0  # no caller audio for this long ends the leg
    stats_every: float = 1.0  # seconds between refreshes of the peer's statistics

    def __post_init__(self) -> None:
        if self.playout_limit_frames <= 0 or self.level_window <= 0:
            raise ValueError("playout limit and level window must be > 0")
        if self.media_timeout < TICK or self.stats_every <= 0:
            raise ValueError("media_timeout must be >= one frame, stats_every > 0")


def parse_message(text: str) -> DtmfDigit | str | None:
    """A data-channel message: a DTMF key, "hangup", or None for anything else (dropped)."""
    if len(text) > MAX_MESSAGE_CHARS:
        return None
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    match msg.get("type"):
        case "dtmf":
            digit, duration = msg.get("digit"), msg.get("duration", 0)
            if not isinstance(digit, str) or digit.upper() not in DTMF_KEYS or len(digit) != 1:
                return None
            if not isinstance(duration, int) or isinstance(duration, bool):
                duration = 0
            return DtmfDigit(digit.upper(), max(0, min(duration, 10_000)))
        case "hangup":
            return "hangup"
        case _:
            return None


class WebRtcLeg(LegBase):
    def __init__(
        self,
        peer: MediaPeer,
        clock: Clock,
        info: LegInfo,
        config: WebRtcLegConfig | None = None,
    ) -> None:
        self.config = config or WebRtcLegConfig()
        super().__init__(
            LegCore(
                info,
                clock,
                name=info.ids.get("webrtc_session", "webrtc"),
                playout_limit_frames=self.config.playout_limit_frames,
                level_window=self.config.level_window,
            )
        )
        self.peer = peer
        self.clock = clock
        rate = peer.sample_rate
        self._up = Resampler(PIPELINE_RATE, rate)
        self._down = Resampler(rate, PIPELINE_RATE)
        self._silence = bytes(2 * rate * FRAME_MS // 1000)
        self._caller_buf = b""
        self._speaking = False  # the last tick sent agent audio (the resampler holds a tail)
        self._tones = b""  # in-band DTMF to send ahead of the agent's audio
        self._last_rx = clock.now()
        self._closed = False
        self._counts = collections.Counter[str]()
        self._peer_stats: dict[str, int | float] = {}
        self._tap_caller: collections.deque[bytes] = collections.deque()

    # ---- CallLeg beyond LegBase ---------------------------------------------------------

    def flush_playout(self) -> int:
        dropped = super().flush_playout()
        # What the peer holds (<= its shallow queue) would still be heard: drop it too.
        dropped_frames = self.peer.clear()
        self._up.reset()
        self._speaking = False
        self._counts["flushes"] += 1
        event(log, "webrtc.flush", call_id=self.info.ids.get("call_id"),
              dropped_samples=dropped, dropped_frames=dropped_frames)  # fmt: skip
        return dropped

    def pause_playout(self, paused: bool) -> None:
        super().pause_playout(paused)
        if paused:
            self.peer.clear()  # silence now; the held audio stays queued in the leg

    async def send_dtmf(self, digits: str) -> None:
        """In-band tones (the caller hears them) and a data-channel message per key."""
        if any(d.upper() not in DTMF_KEYS for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        for d in digits.upper():
            self._tones += dtmf_tone(d)
            self.peer.send_message(json.dumps({"type": "dtmf", "digit": d}))
        self._counts["dtmf_out"] += len(digits)

    async def transfer(self, target: str) -> TransferResult:
        # A browser peer has no one to be transferred to: there is no signalling for it.
        return TransferResult(ok=False, reason="not supported on WebRTC")

    async def hangup(self, reason: str = "normal") -> None:
        if not self.ended:
            self.peer.send_message(json.dumps({"type": "hangup", "reason": reason}))
        self.core.finish(reason)
        await self.aclose()

    def request_hangup(self, reason: str) -> None:
        """End the leg now (the peer connection closes as `run()` returns)."""
        if not self.ended:
            self.peer.send_message(json.dumps({"type": "hangup", "reason": reason}))
        self.core.finish(reason)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._refresh_stats()  # the last numbers, before the connection goes
            await self.peer.close()

    def set_tap(self, tap: MediaTap | None) -> None:
        super().set_tap(tap)
        self._tap_caller.clear()

    def stats(self) -> dict[str, int | float]:
        return {
            "frames_out": self.core.samples_played // (FRAME_BYTES // 2),
            **dict(self._counts),
            **self._peer_stats,
        }

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the leg until it ends. Owned by the call's TaskGroup."""
        await self.run_beside_ticks(
            self._tick,
            {"audio": self._read_audio, "events": self._read_events, "stats": self._poll_stats},
            close=self.aclose,
        )

    async def _read_audio(self) -> None:
        while not self.ended:
            try:
                pcm = await self.peer.receive()
            except PeerClosed:
                self.core.finish("remote_bye")
                return
            self._last_rx = self.clock.now()
            self._caller_buf += self._down.feed(pcm)
            while len(self._caller_buf) >= FRAME_BYTES:
                frame, self._caller_buf = (
                    self._caller_buf[:FRAME_BYTES],
                    self._caller_buf[FRAME_BYTES:],
                )
                self._counts["frames_in"] += 1
                self.core.put(AudioFrame(frame))
                if self.core.tap is not None:
                    self._tap_caller.append(frame)

    async def _read_events(self) -> None:
        while not self.ended:
            try:
                ev = await self.peer.next_event()
            except PeerClosed:
                self.core.finish("remote_bye")
                return
            match ev:
                case PeerState(state=state):
                    event(log, "webrtc.state", call_id=self.info.ids.get("call_id"), state=state)
                    if state == "closed":
                        self.core.finish("remote_bye")
                    elif state == "failed":  # ICE consent or DTLS lost (RFC 7675 §5.1)
                        self.core.finish("media_timeout")
                case PeerMessage(text=text):
                    self._on_message(text)

    def _on_message(self, text: str) -> None:
        match parse_message(text):
            case DtmfDigit() as digit:
                self._counts["dtmf_in"] += 1
                event(log, "call.dtmf", call_id=self.info.ids.get("call_id"), digit=digit.digit)
                self.core.put(digit)
            case "hangup":
                self.core.finish("remote_bye")
            case _:
                self._counts["bad_messages"] += 1
                if self._counts["bad_messages"] <= 3:  # a broken page must not flood the log
                    event(log, "webrtc.bad_message", logging.WARNING, size=len(text))

    async def _poll_stats(self) -> None:
        while not self.ended:
            await self.clock.sleep_until(self.clock.now() + self.config.stats_every)
            await self._refresh_stats()

    async def _refresh_stats(self) -> None:
        # A peer already torn down has no statistics; keep the last ones seen.
        with contextlib.suppress(Exception):
            self._peer_stats = await self.peer.stats()

    # ---- the ticks ----------------------------------------------------------------------

    def _next_pcm(self) -> bytes | None:
        """The agent's 20 ms at 8 kHz for this tick: DTMF first, then the playout; None idle."""
        if self._tones:
            chunk, self._tones = self._tones[:FRAME_BYTES], self._tones[FRAME_BYTES:]
            return chunk.ljust(FRAME_BYTES, b"\0")
        item = self.core.pop()
        if item is None:
            return None
        frame, _ = item
        self.core.samples_played += frame.samples
        return frame.pcm

    def _tick(self, now: float, missed: int) -> None:
        agent = self._next_pcm()
        size = len(self._silence)
        if agent is None:
            # The resampler's withheld tail (2 ms) ends the last run; then silence.
            tail = self._up.finish() if self._speaking else b""
            self._speaking = False
            self.peer.send(tail[:size] + self._silence[len(tail) :])
        else:
            # A run's first frame lacks the resampler's withheld 2 ms: pad in front, so
            # every frame the peer gets is exactly 20 ms.
            self._speaking = True
            self.peer.send(self._up.feed(agent)[-size:].rjust(size, b"\0"))
        if self.core.tap is not None:
            self._tap_ticks(self.core.tap, agent, 1 + missed)
        if now - self._last_rx > self.config.media_timeout:
            event(log, "webrtc.media_timeout", logging.WARNING,
                  call_id=self.info.ids.get("call_id"), seconds=self.config.media_timeout)  # fmt: skip
            self.core.finish("media_timeout")

    def _tap_ticks(self, tap: MediaTap, agent: bytes | None, ticks: int) -> None:
        while len(self._tap_caller) > ticks - 1 + _TAP_CALLER_LAG:
            self._tap_caller.popleft()  # keep the channels aligned after a burst
        for i in range(ticks):
            caller = self._tap_caller.popleft() if self._tap_caller else None
            tap.on_tick(caller, agent if i == ticks - 1 else None)
