"""A Twilio Media Stream as a CallLeg: the caller's µ-law in, the agent's audio out, over one
text WebSocket.

The leg base (transports.leg_base) owns the inputs, the bounded playout, the tap, the end
and the paced ticks; this module adds the wire. Three tasks per leg (owned by the call's
TaskGroup through `run()`):
- the reader parses every message as it arrives: caller audio is delivered at once
  (mediastream.inbound places it by timestamp), DTMF becomes DtmfDigit, mark echoes move the
  played position (mediastream.marks), `stop` ends the leg. Each message is bounded work
  (mediastream.inbound: size and rate limits, caller audio at most 1 s ahead of real time),
  so a `stop` behind a burst still acts within a tick;
- the 20 ms ticker, on an absolute schedule, conceals overdue caller frames and sends agent
  audio paced in real time, at most `lead` ahead of what Twilio has played, with a mark every
  `mark_every_ms` and at the end of each run of an utterance;
- the writer is the only sender on the socket. Control goes to the head of its queue:
  `flush_playout()` drops the local queue and every audio message not yet written, and sends
  `clear` at once (Twilio then drops its buffer, which the lead keeps small).

`played(utterance)` is what Twilio confirmed by echoing a mark: what the caller heard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass

from callbridge.audio.g711 import ulaw_encode
from callbridge.audio.tones import dtmf_tone
from callbridge.core.clock import Clock
from callbridge.core.events import DtmfDigit, TransferResult
from callbridge.core.frames import FRAME_SAMPLES, PIPELINE_RATE, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.transports.leg_base import TICK, LegBase, LegCore
from callbridge.transports.websocket import SocketClosed, TextSocket
from callbridge.twilio_streams.inbound import MAX_MESSAGE_BYTES, CallerAudio, InboundGuard, Refusal
from callbridge.twilio_streams.marks import MarkLedger
from callbridge.twilio_streams.messages import (
    DTMF_DIGITS,
    Clear,
    Connected,
    Dtmf,
    FromTwilio,
    Mark,
    MarkOut,
    Media,
    MediaOut,
    MessageError,
    Start,
    Stop,
    UnknownEvent,
    dumps,
    parse_from_twilio,
)

__all__ = ["SocketClosed", "TextSocket", "TwilioLeg", "TwilioLegConfig", "dtmf_tone"]

log = logging.getLogger("callbridge.transports.twilio.transport")

_FRAME_BYTES = 2 * FRAME_SAMPLES
_TAP_CALLER_LAG = 5  # caller frames a tap may fall behind (a burst) before the oldest go


@dataclass(frozen=True, slots=True)
class TwilioLegConfig:
    lead: float = 0.1  # agent audio handed to Twilio ahead of real time (what `clear` drops)
    mark_every_ms: int = 100
    playout_limit_frames: int = 20  # local queue: 400 ms, then play() waits
    jitter_slack: float = 0.06  # caller audio this late is concealed
    media_timeout: float = 30.0  # no message at all for this long ends the leg
    level_window: int = 30  # frames of playback level for the barge-in echo guard (600 ms)
    outbox_limit: int = 25  # messages queued for the socket before pacing stops feeding it
    max_message_bytes: int = MAX_MESSAGE_BYTES  # a bigger message closes the stream (1009)
    max_ahead: float = 1.0  # caller audio further ahead of real time is dropped (counted)

    def __post_init__(self) -> None:
        if self.lead < TICK or self.mark_every_ms <= 0 or self.playout_limit_frames <= 0:
            raise ValueError("lead must be >= one frame; mark_every_ms, playout limit > 0")
        if self.max_ahead < TICK:
            raise ValueError("max_ahead must be >= one frame")


class TwilioLeg(LegBase):
    def __init__(
        self,
        socket: TextSocket,
        start: Start,
        clock: Clock,
        info: LegInfo,
        config: TwilioLegConfig | None = None,
        *,
        guard: InboundGuard | None = None,
    ) -> None:
        self.config = config or TwilioLegConfig()
        super().__init__(
            LegCore(
                info,
                clock,
                name=start.stream_sid,
                playout_limit_frames=self.config.playout_limit_frames,
                level_window=self.config.level_window,
            )
        )
        self.socket = socket
        self.start = start
        self.stream_sid = start.stream_sid
        self.clock = clock
        # The handshake's guard goes on: one rate window from the first message.
        self._guard = guard or InboundGuard(self.config.max_message_bytes)
        self._caller = CallerAudio(slack=self.config.jitter_slack, max_ahead=self.config.max_ahead)
        self._caller_dropped = False  # logged that caller audio was dropped (once per stream)
        self._ledger = MarkLedger(every=self.config.mark_every_ms * PIPELINE_RATE // 1000)
        self._outbox: collections.deque[tuple[bool, str]] = collections.deque()  # (audio?, text)
        self._wake = asyncio.Event()
        self._tones = b""  # DTMF audio to send ahead of the agent's
        self._play_end = 0.0  # when Twilio's buffer of what we sent runs dry (estimate)
        self._last_rx = clock.now()
        self._closed = False
        self._close_code, self._close_reason = 1000, ""
        self._counts = collections.Counter[str]()
        # What the tap gets, one frame per tick: caller frames come from the reader as they
        # arrive; agent audio is sent up to `lead` ahead and plays out at one frame per tick
        # in Twilio's buffer, which this queue models (a `clear` empties both).
        self._tap_caller: collections.deque[bytes] = collections.deque()
        self._tap_agent: collections.deque[bytes] = collections.deque()

    # ---- CallLeg: what Twilio does beyond LegBase ------------------------------------------

    def flush_playout(self) -> int:
        dropped = super().flush_playout()
        if not self.ended:
            self._clear_remote(dropped, why="flush")
        return dropped

    def pause_playout(self, paused: bool) -> None:
        # Held, the ticker sends nothing more, and Twilio drops what it has (<= lead): the
        # caller hears silence now. If the hold was a false alarm, those <= 100 ms are
        # skipped when the answer resumes, a small price for a fast stop.
        super().pause_playout(paused)
        if paused and not self.ended and self.clock.now() < self._play_end:
            self._clear_remote(0, why="hold")

    def _clear_remote(self, dropped: int, why: str) -> None:
        # Audio not yet written would play after the clear: drop it (and its marks) too.
        self._outbox = collections.deque(item for item in self._outbox if not item[0])
        cancelled = self._ledger.clear()
        self._outbox.appendleft((False, dumps(Clear(self.stream_sid))))
        self._wake.set()
        self._tap_agent.clear()  # Twilio drops what it had not played yet
        self._play_end = self.clock.now()  # Twilio's buffer is empty once it has the clear
        self._counts["clears"] += 1
        event(
            log,
            "twilio.clear",
            call_id=self.info.ids.get("call_id"),
            why=why,
            dropped_samples=dropped,
            marks_cancelled=cancelled,
        )

    def played(self, utterance: int) -> int:
        return self._ledger.played(utterance)

    @property
    def playing(self) -> bool:
        if super().playing:
            return True
        now = self.clock.now()
        # Sent audio is still in Twilio's buffer until it plays out; while marks are
        # unanswered, allow the network a second of delay on top of the estimate.
        return now < self._play_end or (self._ledger.outstanding > 0 and now < self._play_end + 1)

    async def send_dtmf(self, digits: str) -> None:
        """Digits are played in-band (Media Streams cannot signal them), ahead of queued audio."""
        if any(d.upper() not in DTMF_DIGITS for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        self._tones += b"".join(dtmf_tone(d.upper()) for d in digits)

    async def transfer(self, target: str) -> TransferResult:
        # A Media Stream carries audio only; redirecting the call takes Twilio's REST API.
        return TransferResult(ok=False, reason="not supported on Twilio media streams")

    async def hangup(self, reason: str = "normal") -> None:
        """End the leg and close the socket: Twilio ends a <Connect><Stream> call when its
        stream closes (no TwiML follows)."""
        self._finish(reason)
        await self.aclose()

    # ---- lifecycle ----------------------------------------------------------------------

    def set_tap(self, tap: MediaTap | None) -> None:
        super().set_tap(tap)
        self._tap_caller.clear()
        self._tap_agent.clear()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(SocketClosed):
                await self.socket.close(self._close_code, self._close_reason)

    def request_hangup(self, reason: str) -> None:
        """End the leg now (the socket closes as `run()` returns)."""
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self.core.finish(reason):
            self._wake.set()  # the writer stops

    def stats(self) -> dict[str, int | float]:
        caller = self._caller.stats
        return {
            "frames_in": caller.frames,
            "frames_concealed": caller.concealed_frames,
            "payloads_late": caller.late_payloads,
            "payloads_ahead": caller.ahead_payloads,
            "payloads_oversized": caller.oversized_payloads,
            "frames_out": self.core.samples_played // FRAME_SAMPLES,
            "marks_sent": self._ledger.marks_sent,
            "marks_echoed": self._ledger.marks_echoed,
            "marks_cancelled": self._ledger.marks_cancelled,
            **dict(self._counts),
        }

    async def run(self) -> None:
        """Drive the stream until it ends. Owned by the call's TaskGroup."""
        await self.run_beside_ticks(
            self._tick,
            {"read": self._read, "write": self._write},
            finish=self._finish,
            close=self.aclose,
        )

    # ---- receiving ----------------------------------------------------------------------

    async def _read(self) -> None:
        while not self.ended:
            try:
                text = await self.socket.receive_text()
            except SocketClosed as exc:
                if exc.code == 1009:  # the server's own frame limit refused a message
                    self._refuse(Refusal(1009, exc.reason, "message_too_big"))
                else:
                    self._finish("socket_closed")
                return
            now = self.clock.now()
            self._last_rx = now
            refusal = self._guard.check(text, now)
            if refusal is not None:
                self._refuse(refusal)
                return
            try:
                msg = parse_from_twilio(text)
            except UnknownEvent as exc:
                self._counts["unknown_events"] += 1
                log.debug("ignoring %s", exc)
                continue
            except MessageError as exc:
                self._counts["bad_messages"] += 1
                if self._counts["bad_messages"] <= 3:  # a broken peer must not flood the log
                    event(log, "twilio.bad_message", logging.WARNING, error=str(exc))
                continue
            self._on_message(msg, now)

    def _refuse(self, refusal: Refusal) -> None:
        """End the stream over a limit: one log line, then the socket closes with its code."""
        event(log, "twilio.stream_limit", logging.WARNING, call_id=self.info.ids.get("call_id"),
              stream_sid=self.stream_sid, code=refusal.code, reason=refusal.reason)  # fmt: skip
        self._close_code, self._close_reason = refusal.code, refusal.reason
        self._finish(refusal.end_reason)

    def _on_message(self, msg: FromTwilio, now: float) -> None:
        match msg:
            case Media(track=track, timestamp=timestamp, payload=payload):
                if track != "outbound":  # a <Connect><Stream> carries the caller only
                    self._deliver(self._caller.receive(timestamp, payload, now))
                    self._log_dropped()
            case Mark(name=name):
                self._ledger.echoed(name)
            case Dtmf(digit=digit):
                self._counts["dtmf_in"] += 1
                event(log, "call.dtmf", call_id=self.info.ids.get("call_id"), digit=digit)
                # Twilio reports the key, not its length.
                self.core.put(DtmfDigit(digit, 0))
            case Stop():
                self._finish("twilio_stop")
            case Connected() | Start():
                pass  # repeats of the handshake: nothing new

    def _log_dropped(self) -> None:
        stats = self._caller.stats
        if not self._caller_dropped and (stats.ahead_payloads or stats.oversized_payloads):
            self._caller_dropped = True  # stats() has the counts
            event(log, "twilio.caller_audio_dropped", logging.WARNING,
                  call_id=self.info.ids.get("call_id"), ahead=stats.ahead_payloads,
                  oversized=stats.oversized_payloads)  # fmt: skip

    # ---- sending ------------------------------------------------------------------------

    def _send(self, text: str, audio: bool) -> None:
        self._outbox.append((audio, text))
        self._wake.set()

    async def _write(self) -> None:
        while not self.ended:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            _, text = self._outbox.popleft()
            try:
                await self.socket.send_text(text)
            except SocketClosed:
                self._finish("socket_closed")

    def _send_audio(self, pcm: bytes, now: float) -> None:
        self._send(dumps(MediaOut(self.stream_sid, ulaw_encode(pcm))), audio=True)
        if self.core.tap is not None:
            self._tap_agent.append(pcm)
        self._play_end = max(self._play_end, now) + len(pcm) / 2 / PIPELINE_RATE

    def _send_mark(self, name: str | None) -> None:
        if name is not None:
            self._send(dumps(MarkOut(self.stream_sid, name)), audio=True)

    def _pump(self, now: float) -> None:
        """Keep Twilio's buffer `lead` ahead of real time, no more."""
        while self._play_end - now < self.config.lead - 1e-9:
            if len(self._outbox) >= self.config.outbox_limit:
                self._counts["socket_backlog"] += 1
                return  # the socket is not keeping up; queueing more only adds delay
            if self._tones:
                chunk, self._tones = self._tones[:_FRAME_BYTES], self._tones[_FRAME_BYTES:]
                self._send_audio(chunk, now)
                continue
            item = self.core.pop()
            if item is None:  # idle or held: Twilio may report when what it has is played
                self._send_mark(self._ledger.idle())
                return
            frame, utterance = item
            utt = int(utterance)
            self._send_mark(self._ledger.before(utt))
            self._send_audio(frame.pcm, now)
            self.core.samples_played += frame.samples
            self._send_mark(self._ledger.sent(utt, frame.samples))

    def _deliver(self, frames: list[AudioFrame]) -> None:
        for frame in frames:
            self.core.put(frame)
            if self.core.tap is not None:
                self._tap_caller.append(frame.pcm)

    def _tap_ticks(self, tap: MediaTap, ticks: int) -> None:
        while len(self._tap_caller) > ticks - 1 + _TAP_CALLER_LAG:
            self._tap_caller.popleft()  # keep the channels aligned after a burst
        for _ in range(ticks):
            caller = self._tap_caller.popleft() if self._tap_caller else None
            agent = self._tap_agent.popleft() if self._tap_agent else None
            tap.on_tick(caller, agent)

    def _tick(self, now: float, missed: int) -> None:
        # After a stall a tap still gets one frame per 20 ms of wall time (concealed ones).
        self._deliver(self._caller.tick(now))
        self._pump(now)
        if self.core.tap is not None:
            self._tap_ticks(self.core.tap, 1 + missed)
        if now - self._last_rx > self.config.media_timeout:
            event(log, "twilio.media_timeout", logging.WARNING, seconds=self.config.media_timeout)
            self._finish("media_timeout")
