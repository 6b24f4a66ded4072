"""An AudioSocket connection from Asterisk as a CallLeg.

The leg base owns inputs, playout, tap, end and the 20 ms ticks; this adds the wire
(callbridge.asterisk.audiosocket has the protocol and its Asterisk source facts):
- the reader feeds every byte to the bounded decoder: audio goes to the agent at once
  (stream_media.CallerStream paces it, resampled from slin12..slin192 to the pipeline rate),
  DTMF becomes DtmfDigit, end of stream is the caller hanging up - Asterisk never sends a
  hangup frame, it closes the socket (chan_audiosocket.c:152-166). A garbage frame ends the
  call cleanly ("protocol_error"): a byte stream cannot be resynchronised.
- every tick writes exactly one frame of the agent (silence when there is none: the line
  never goes quiet, as on RTP), at the rate Asterisk sends us. AudioSocket cannot recall
  audio, so nothing is written ahead of real time and a barge-in flush drops only local
  audio; if the kernel buffer grows (Asterisk not reading), frames are skipped, not queued.
- our hang-up writes the hangup frame (0x00, which Asterisk accepts from the server,
  res_audiosocket.c:338-346) and closes.
Asterisk takes no DTMF from the server (only hangup and audio kinds), so `send_dtmf` plays
the digits in-band, and there is no transfer over AudioSocket (the dialplan or ARI does it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Protocol

from callbridge.asterisk.audiosocket import (
    DTMF_DIGITS,
    Audio,
    AudioSocketDecoder,
    Dtmf,
    ErrorFrame,
    Frame,
    Hangup,
    UuidFrame,
    encode,
)
from callbridge.asterisk.errors import AudioSocketError
from callbridge.audio.tones import dtmf_tone
from callbridge.core.clock import Clock
from callbridge.core.events import DtmfDigit, TransferResult
from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, PIPELINE_RATE, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.transports.asterisk.stream_media import AgentStream, CallerStream
from callbridge.transports.leg_base import LegBase, LegCore

__all__ = ["AudioSocketLeg", "AudioSocketLegConfig", "ByteStream", "StreamPair"]

log = logging.getLogger("callbridge.transports.asterisk.audiosocket")

_TAP_CALLER_LAG = 5


class ByteStream(Protocol):
    """The little of a TCP connection a leg needs."""

    async def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at the end of the stream. May raise OSError."""
        ...

    def write(self, data: bytes) -> None:
        """Never blocks (buffered); a closed stream drops the data."""
        ...

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        ...

    def close(self) -> None:
        """Idempotent."""
        ...


class StreamPair:
    """An asyncio (reader, writer) as a ByteStream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.read(n)
        except OSError as exc:
            # The reader keeps the error (and raises it on every read); with its traceback it
            # would hold the frames that hold this pair and the leg: a reference cycle that
            # only a full garbage collection frees. Raised afresh, the same type and errno.
            exc.__traceback__ = None
            raise type(exc)(*exc.args) from None

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class AudioSocketLegConfig:
    media_timeout: float = 30.0  # nothing from Asterisk for this long ends the leg
    slack_frames: int = 3  # caller audio this late (60 ms) is concealed
    max_ahead_frames: int = 50  # caller audio further ahead of real time (1 s) is dropped
    max_backlog_frames: int = 5  # unsent frames in the kernel before ticks skip writing
    read_bytes: int = 8192  # one read; the decoder holds at most one frame (64 KiB)
    playout_limit_frames: int = 20


class AudioSocketLeg(LegBase):
    def __init__(
        self,
        stream: ByteStream,
        decoder: AudioSocketDecoder,
        clock: Clock,
        info: LegInfo,
        config: AudioSocketLegConfig | None = None,
        *,
        early: list[Frame] | None = None,
    ) -> None:
        self.config = config or AudioSocketLegConfig()
        uuid = info.ids.get("audiosocket_uuid", "audiosocket")
        super().__init__(
            LegCore(
                info,
                clock,
                name=uuid,
                playout_limit_frames=self.config.playout_limit_frames,
                level_window=25,
            )
        )
        self.stream = stream
        self.decoder = decoder
        self.clock = clock
        self._caller = CallerStream(self.config.slack_frames, self.config.max_ahead_frames)
        self._agent = AgentStream(PIPELINE_RATE)
        self._tones = b""
        self._last_rx = clock.now()
        self._closed = False
        self._counts = collections.Counter[str]()
        self._tap_caller: collections.deque[bytes] = collections.deque()
        for frame in early or ():  # frames that came with the UUID
            self._on_frame(frame, self._last_rx)

    # ---- CallLeg beyond LegBase --------------------------------------------------------------

    def flush_playout(self) -> int:
        self._agent.drop()
        self._tones = b""
        return super().flush_playout()

    async def send_dtmf(self, digits: str) -> None:
        """In-band tones ahead of queued audio: Asterisk reads no DTMF kind from the server."""
        if any(d.upper() not in DTMF_DIGITS for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        self._tones += b"".join(dtmf_tone(d.upper()) for d in digits)

    async def transfer(self, target: str) -> TransferResult:
        return TransferResult(ok=False, reason="not supported over AudioSocket")

    async def hangup(self, reason: str = "normal") -> None:
        if not self.ended:
            self.stream.write(encode(Hangup()))
        self._finish(reason)
        self.aclose()

    def request_hangup(self, reason: str) -> None:
        """End the leg now (the socket closes as `run()` returns)."""
        if not self.ended:
            self.stream.write(encode(Hangup()))
        self._finish(reason)

    def set_tap(self, tap: MediaTap | None) -> None:
        super().set_tap(tap)
        self._tap_caller.clear()

    def stats(self) -> dict[str, int | float]:
        c = self._caller.stats
        return {
            "frames_in": c.frames,
            "frames_concealed": c.concealed_frames,
            "frames_ahead": c.ahead_frames,
            "frames_out": self.core.samples_played // FRAME_SAMPLES,
            **dict(self._counts),
        }

    # ---- lifecycle ---------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        self.core.finish(reason)

    def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.close()

    async def run(self) -> None:
        await self.run_beside_ticks(
            self._tick, {"read": self._read}, finish=self._finish, close=self.aclose
        )

    # ---- receiving ---------------------------------------------------------------------------

    async def _read(self) -> None:
        while not self.ended:
            try:
                data = await self.stream.read(self.config.read_bytes)
            except (OSError, asyncio.IncompleteReadError):
                data = b""
            if not data:
                self._finish("remote_hangup")  # Asterisk hangs up by closing the socket
                return
            now = self.clock.now()
            self._last_rx = now
            try:
                frames = self.decoder.feed(data)
            except AudioSocketError as exc:
                self._counts["protocol_errors"] += 1
                event(log, "audiosocket.protocol_error", logging.WARNING,
                      call_id=self.info.ids.get("call_id"), error=str(exc))  # fmt: skip
                self._finish("protocol_error")
                return
            for frame in frames:
                self._on_frame(frame, now)
                if self.core.ended:  # a hangup frame: what follows it is not read
                    return

    def _on_frame(self, frame: Frame, now: float) -> None:
        match frame:
            case Audio(pcm=pcm, sample_rate=rate):
                if rate != self._agent.rate:
                    self._agent.set_rate(rate)  # answer in the rate Asterisk speaks
                    self.info.ids["audiosocket_rate"] = str(rate)
                self._deliver(self._caller.receive(pcm, rate, now))
            case Dtmf(digit=digit):
                self._counts["dtmf_in"] += 1
                event(log, "call.dtmf", call_id=self.info.ids.get("call_id"), digit=digit)
                self.core.put(DtmfDigit(digit, 0))  # AudioSocket reports the key, not its length
            case Hangup():
                self._finish("remote_hangup")
            case ErrorFrame() as err:
                code = err.code
                event(log, "audiosocket.error_frame", logging.WARNING,
                      call_id=self.info.ids.get("call_id"),
                      code=code.name if code is not None else None)  # fmt: skip
                self._finish("remote_error")
            case UuidFrame():
                self._counts["uuid_repeats"] += 1  # only the first one means something

    def _deliver(self, frames: list[AudioFrame]) -> None:
        for frame in frames:
            self.core.put(frame)
            if self.core.tap is not None:
                self._tap_caller.append(frame.pcm)

    # ---- sending -----------------------------------------------------------------------------

    def _tick(self, now: float, missed: int) -> None:
        self._deliver(self._caller.tick(now))
        agent_pcm = self._send(now)
        tap = self.core.tap
        if tap is not None:
            while len(self._tap_caller) > missed + _TAP_CALLER_LAG:
                self._tap_caller.popleft()
            for i in range(1 + missed):
                caller = self._tap_caller.popleft() if self._tap_caller else None
                tap.on_tick(caller, agent_pcm if i == missed else None)
        if now - self._last_rx > self.config.media_timeout:
            event(log, "audiosocket.media_timeout", logging.WARNING,
                  seconds=self.config.media_timeout)  # fmt: skip
            self.request_hangup("media_timeout")

    def _send(self, now: float) -> bytes | None:
        """Write this tick's frame; the agent's PCM that went out (None: silence or skipped)."""
        backlog = self.config.max_backlog_frames * 2 * self._agent.rate // 50
        if self.stream.buffered() > backlog:
            self._counts["socket_backlog"] += 1
            return None  # Asterisk is not reading: queueing more only delays a barge-in
        pcm: bytes | None = None
        if self._tones:
            pcm, self._tones = self._tones[:FRAME_BYTES], self._tones[FRAME_BYTES:]
            pcm = pcm.ljust(FRAME_BYTES, b"\0")
        else:
            item = self.core.pop()
            if item is not None:
                pcm = item[0].pcm
                self.core.samples_played += item[0].samples
        for piece in self._agent.convert(pcm or bytes(FRAME_BYTES)):
            self.stream.write(encode(Audio(piece, self._agent.rate)))
        return pcm
