"""A chan_websocket channel (Asterisk 22.6+/23 `Dial(WebSocket/...)`) as a CallLeg.

callbridge.asterisk.chan_websocket has the control protocol and its source facts. The wire:
BINARY messages are raw audio in the channel's format (ulaw, alaw or slin at 8-192 kHz),
TEXT messages control. Three tasks per leg, as for Twilio:
- the reader: audio goes to the agent at once (stream_media.CallerStream paces it), DTMF_END
  becomes DtmfDigit, MEDIA_XOFF/MEDIA_XON stop and restart our sending, ERROR is logged, the
  socket closing is the caller hanging up;
- the 20 ms ticker sends the agent's audio in whole multiples of `optimal_frame_size`
  (Asterisk drops a partial tail, chan_websocket.c:1051), at most `lead` ahead of real time,
  so Asterisk's queue (1000 frames, XOFF at 900) never holds more than a few frames;
- the writer is the only sender; control goes to the head of its queue. A barge-in flush
  drops our queue and what is not yet written, and sends FLUSH_MEDIA, which empties
  Asterisk's queue (refused with ERROR in passthrough mode, optimal_frame_size 0, where we
  send nothing then).
Our hang-up sends HANGUP, then closes. There is no DTMF command towards Asterisk: digits are
played in-band; no transfer over a media WebSocket (the dialplan or ARI does that).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from callbridge.asterisk import chan_websocket as cws
from callbridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.audio.tones import dtmf_tone
from callbridge.core.clock import Clock
from callbridge.core.events import DtmfDigit, TransferResult
from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, PIPELINE_RATE
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.transports.asterisk.stream_media import AgentStream, CallerStream
from callbridge.transports.leg_base import LegBase, LegCore
from callbridge.transports.websocket import SocketClosed

__all__ = [
    "FORMATS",
    "ChanWebSocketLeg",
    "ChanWebSocketLegConfig",
    "MediaSocket",
    "format_rate",
]

log = logging.getLogger("callbridge.transports.asterisk.chan_websocket")

_SLIN_RATES = {"slin": 8000, "slin12": 12000, "slin16": 16000, "slin24": 24000,
               "slin32": 32000, "slin44": 44100, "slin48": 48000, "slin96": 96000,
               "slin192": 192000}  # fmt: skip
FORMATS = frozenset({"ulaw", "alaw", *_SLIN_RATES})
_TAP_CALLER_LAG = 5


def format_rate(fmt: str) -> int:
    """The PCM rate of a channel format we take; ValueError for the others."""
    if fmt in ("ulaw", "alaw"):
        return 8000
    try:
        return _SLIN_RATES[fmt]
    except KeyError:
        raise ValueError(f"channel format {fmt!r} is not one of {sorted(FORMATS)}") from None


class MediaSocket(Protocol):
    """A WebSocket with both message kinds. Every method raises SocketClosed once closed."""

    async def send_text(self, text: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Idempotent; never raises."""
        ...


@dataclass(frozen=True, slots=True)
class ChanWebSocketLegConfig:
    lead: float = 0.06  # agent audio in Asterisk's queue ahead of real time (FLUSH_MEDIA drops it)
    slack_frames: int = 3
    max_ahead_frames: int = 50
    media_timeout: float = 30.0
    playout_limit_frames: int = 20
    outbox_limit: int = 25


class ChanWebSocketLeg(LegBase):
    def __init__(
        self,
        socket: MediaSocket,
        start: cws.MediaStart,
        clock: Clock,
        info: LegInfo,
        config: ChanWebSocketLegConfig | None = None,
        *,
        control_format: cws.ControlFormat = "plain-text",
    ) -> None:
        self.config = config or ChanWebSocketLegConfig()
        super().__init__(
            LegCore(
                info,
                clock,
                name=start.channel_id,
                level_window=25,
                playout_limit_frames=self.config.playout_limit_frames,
            )
        )
        self.socket = socket
        self.start = start
        # f(json) or chan_websocket.conf: Asterisk reads our commands in its events' format
        self.control_format: cws.ControlFormat = control_format
        self._hangup_text = cws.format_command(cws.Hangup(), control_format)
        self.clock = clock
        self.format = start.format
        self.rate = format_rate(start.format)
        g711 = self.format in ("ulaw", "alaw")
        self.passthrough = start.optimal_frame_size == 0
        # optimal_frame_size is in the channel format's bytes: µ-law has one byte per sample.
        pcm_frame = start.optimal_frame_size * (2 if g711 else 1)
        self._caller = CallerStream(self.config.slack_frames, self.config.max_ahead_frames)
        self._agent = AgentStream(self.rate, pcm_frame)
        self._outbox: collections.deque[tuple[bool, str | bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._xoff = False
        self._play_end = 0.0
        self._tones = b""
        self._last_rx = clock.now()
        self._closed = False
        self._counts = collections.Counter[str]()
        self._tap_caller: collections.deque[bytes] = collections.deque()
        self._tap_agent: collections.deque[bytes] = collections.deque()

    # ---- CallLeg beyond LegBase ------------------------------------------------------------

    def flush_playout(self) -> int:
        dropped = super().flush_playout()
        self._agent.drop()
        self._tones = b""
        if not self.ended:
            self._outbox = collections.deque(m for m in self._outbox if not m[0])
            self._tap_agent.clear()
            self._play_end = self.clock.now()
            if not self.passthrough:  # chan_websocket answers ERROR in passthrough mode
                self._control(cws.FlushMedia())
            self._counts["flushes"] += 1
            event(log, "chan_websocket.flush", call_id=self.info.ids.get("call_id"),
                  dropped_samples=dropped)  # fmt: skip
        return dropped

    def pause_playout(self, paused: bool) -> None:
        # Asterisk holds the few frames it has queued too (PAUSE_MEDIA keeps them for
        # CONTINUE_MEDIA): the caller hears silence at once, and nothing is lost if the
        # interruption was a false alarm.
        super().pause_playout(paused)
        if not self.ended and not self.passthrough:
            self._control(cws.PauseMedia() if paused else cws.ContinueMedia())

    @property
    def playing(self) -> bool:
        return super().playing or self.clock.now() < self._play_end

    async def send_dtmf(self, digits: str) -> None:
        if any(d.upper() not in "0123456789*#ABCD" for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        self._tones += b"".join(dtmf_tone(d.upper()) for d in digits)

    async def transfer(self, target: str) -> TransferResult:
        return TransferResult(ok=False, reason="not supported over chan_websocket")

    async def hangup(self, reason: str = "normal") -> None:
        if not self.ended:
            with contextlib.suppress(SocketClosed):
                await self.socket.send_text(cws.format_command(cws.Hangup(), self.control_format))
        self.core.finish(reason)
        self._wake.set()
        await self.aclose()

    def request_hangup(self, reason: str) -> None:
        if not self.ended:
            self._control(cws.Hangup())
        self.core.end_reason = self.core.end_reason or reason

    def set_tap(self, tap: MediaTap | None) -> None:
        super().set_tap(tap)
        self._tap_caller.clear()
        self._tap_agent.clear()

    def stats(self) -> dict[str, int | float]:
        c = self._caller.stats
        return {
            "frames_in": c.frames,
            "frames_concealed": c.concealed_frames,
            "frames_ahead": c.ahead_frames,
            "frames_out": self.core.samples_played // FRAME_SAMPLES,
            **dict(self._counts),
        }

    # ---- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.socket.close(1000)

    def _finish(self, reason: str) -> None:
        if self.core.finish(reason):
            self._wake.set()

    async def run(self) -> None:
        self._control(cws.Answer())  # the outgoing channel is up once we answer
        await self.run_beside_ticks(
            self._tick,
            {"read": self._read, "write": self._write},
            finish=self._finish,
            close=self.aclose,
        )

    # ---- receiving -------------------------------------------------------------------------

    async def _read(self) -> None:
        while not self.ended:
            try:
                message = await self.socket.receive()
            except SocketClosed:
                self._finish(self.core.end_reason or "remote_hangup")
                return
            now = self.clock.now()
            self._last_rx = now
            if isinstance(message, bytes):
                self._audio(message, now)
                continue
            try:
                ev = cws.parse_event(message, "plain-text" if message[:1] != "{" else "json")
            except cws.ChanWebSocketError as exc:
                self._counts["bad_events"] += 1
                if self._counts["bad_events"] <= 3:
                    event(log, "chan_websocket.bad_event", logging.WARNING, error=str(exc))
                continue
            self._on_event(ev)

    def _audio(self, data: bytes, now: float) -> None:
        if self.format == "ulaw":
            pcm = ulaw_decode(data)
        elif self.format == "alaw":
            pcm = alaw_decode(data)
        else:
            pcm = data[: len(data) - len(data) % 2]
        if not pcm:
            return
        for frame in self._caller.receive(pcm, self.rate, now):
            self.core.put(frame)
            if self.core.tap is not None:
                self._tap_caller.append(frame.pcm)

    def _on_event(self, ev: cws.Event) -> None:
        match ev:
            case cws.DtmfEnd(digit=digit):
                self._counts["dtmf_in"] += 1
                event(log, "call.dtmf", call_id=self.info.ids.get("call_id"), digit=digit)
                self.core.put(DtmfDigit(digit, 0))
            case cws.MediaXoff():
                self._xoff = True  # Asterisk's queue is at 900 of 1000 frames
                self._counts["xoff"] += 1
            case cws.MediaXon():
                self._xoff = False
            case cws.EventError(error_text=text):
                event(log, "chan_websocket.error", logging.WARNING, error=text[:200])
            case cws.MediaStart():
                pass  # a repeat: nothing new
            case _:
                pass  # QUEUE_DRAINED, marks, STATUS, newer events

    # ---- sending ---------------------------------------------------------------------------

    def _control(self, command: cws.Command) -> None:
        """Ahead of queued audio, behind earlier control: PAUSE then CONTINUE keep their order."""
        at = 0
        while at < len(self._outbox) and not self._outbox[at][0]:
            at += 1
        self._outbox.insert(at, (False, cws.format_command(command, self.control_format)))
        self._wake.set()

    async def _write(self) -> None:
        while not self.ended:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            _, message = self._outbox.popleft()
            try:
                if isinstance(message, bytes):
                    await self.socket.send_bytes(message)
                else:
                    await self.socket.send_text(message)
                    if message == self._hangup_text:
                        self._finish(self.core.end_reason or "normal")
            except SocketClosed:
                self._finish("remote_hangup")

    def _encode(self, pcm: bytes) -> bytes:
        if self.format == "ulaw":
            return ulaw_encode(pcm)
        if self.format == "alaw":
            return alaw_encode(pcm)
        return pcm

    def _pump(self, now: float) -> None:
        while not self._xoff and self._play_end - now < self.config.lead - 1e-9:
            if len(self._outbox) >= self.config.outbox_limit:
                self._counts["socket_backlog"] += 1
                return
            if self._tones:
                pcm, self._tones = self._tones[:FRAME_BYTES], self._tones[FRAME_BYTES:]
                pcm = pcm.ljust(FRAME_BYTES, b"\0")
            else:
                item = self.core.pop()
                if item is None:
                    return
                pcm = item[0].pcm
                self.core.samples_played += item[0].samples
            for piece in self._agent.convert(pcm):
                self._outbox.append((True, self._encode(piece)))
            self._wake.set()
            if self.core.tap is not None:
                self._tap_agent.append(pcm)
            self._play_end = max(self._play_end, now) + len(pcm) / 2 / PIPELINE_RATE

    def _tick(self, now: float, missed: int) -> None:
        for frame in self._caller.tick(now):
            self.core.put(frame)
            if self.core.tap is not None:
                self._tap_caller.append(frame.pcm)
        self._pump(now)
        tap = self.core.tap
        if tap is not None:
            while len(self._tap_caller) > missed + _TAP_CALLER_LAG:
                self._tap_caller.popleft()
            for _ in range(1 + missed):
                caller = self._tap_caller.popleft() if self._tap_caller else None
                agent = self._tap_agent.popleft() if self._tap_agent else None
                tap.on_tick(caller, agent)
        if now - self._last_rx > self.config.media_timeout:
            event(log, "chan_websocket.media_timeout", logging.WARNING,
                  seconds=self.config.media_timeout)  # fmt: skip
            self.request_hangup("media_timeout")
