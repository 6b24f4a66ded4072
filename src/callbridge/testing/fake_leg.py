"""FakeLeg: a complete CallLeg with no network, built on the same leg base as the transports.

The test plays the caller: it scripts what the caller says (`say`, `silence`, `feed`), hands
over events at once (`put`), and hangs up (`end`). The leg plays the wire: every 20 ms tick
(`run()` or `pump()` on the leg's clock, or `tick()` by hand) sends the agent's next queued
frame, recording it in `sent`, and delivers the caller's next scripted frame. Playout has
the real semantics (bounded `play`, `flush_playout`, `pause_playout`, `played`), so what a
test sees is what a caller on a real transport would have heard.
"""

from __future__ import annotations

import asyncio
import collections
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from callbridge.core.clock import Clock
from callbridge.core.events import LegInput, TransferResult
from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, PIPELINE_RATE, AudioFrame
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.transports.leg_base import PLAYOUT_LIMIT_FRAMES, TICK, LegBase, LegCore

__all__ = ["AfterScript", "FakeLeg", "Sent", "TransferRequest", "caller_tone"]

# What the caller does once the script runs out: keep the line live with silence (as a real
# leg's jitter buffer does), send nothing at all, or hang up ("remote_bye").
AfterScript = Literal["silence", "nothing", "hangup"]

NOT_SUPPORTED = TransferResult(ok=False, reason="not supported by this leg")


@dataclass(frozen=True, slots=True)
class Sent:
    """What one tick handed the caller: agent audio of `utterance`, or nothing (None, b"")."""

    at: float
    utterance: int | None
    pcm: bytes


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A `transfer()` call: when, and to whom."""

    at: float
    target: str


def caller_tone(frames: int, level: int = 6000, hz: float = 300.0) -> list[AudioFrame]:
    """`frames` 20 ms frames of a continuous sine: loud enough for any VAD to call speech."""
    t = np.arange(frames * FRAME_SAMPLES)
    pcm = (level * np.sin(2 * np.pi * hz * t / PIPELINE_RATE)).astype("<i2").tobytes()
    return [AudioFrame(pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]) for i in range(frames)]


class FakeLeg(LegBase):
    """A scripted caller on the real playout. `echo=True` adds the agent's own audio at -20 dB
    to what the caller sends (a far end without echo cancelling). `transfer_result` is what
    `transfer()` answers; an ok one ends the leg ("transferred"), as SipLeg does."""

    def __init__(
        self,
        clock: Clock,
        *,
        info: LegInfo | None = None,
        after_script: AfterScript = "silence",
        echo: bool = False,
        transfer_result: TransferResult = NOT_SUPPORTED,
        playout_limit_frames: int = PLAYOUT_LIMIT_FRAMES,
    ) -> None:
        info = info or LegInfo("fake", "inbound", local_user="agent", ids={"call_id": "fake-1"})
        super().__init__(
            LegCore(info, clock, name="fake-leg", playout_limit_frames=playout_limit_frames)
        )
        self.clock = clock
        self.after_script = after_script
        self.echo = echo
        self.transfer_result = transfer_result
        self.caller: collections.deque[LegInput] = collections.deque()  # the script
        self.sent: list[Sent] = []  # one per tick
        self.agent_frames: list[AudioFrame] = []  # everything play()/offer() queued, in order
        self.flushes: list[float] = []  # when flush_playout() was called
        self.taps: list[MediaTap | None] = []  # every set_tap(), in order
        self.dtmf_sent: list[str] = []
        self.transfers: list[TransferRequest] = []
        self.hangups: list[str] = []  # reasons given to hangup()
        self.ticks = 0
        self._ticked = asyncio.Event()

    # ---- the caller (the test) -------------------------------------------------------------

    def feed(self, *items: LegInput | bytes) -> None:
        """Script caller inputs: one frame per tick; digits and hold changes go with the
        frame before them (or the next one, at the start). Bytes are PCM16 frames."""
        self.caller.extend(AudioFrame(i) if isinstance(i, bytes) else i for i in items)

    def say(self, frames: int, silence_before: int = 0, level: int = 6000) -> None:
        """Script `silence_before` frames of silence, then `frames` of loud tone."""
        self.silence(silence_before)
        self.caller.extend(caller_tone(frames, level))

    def silence(self, frames: int) -> None:
        self.caller.extend(AudioFrame.silence() for _ in range(frames))

    def put(self, item: LegInput) -> None:
        """Deliver an input now, outside the tick schedule."""
        self.core.put(item)

    def end(self, reason: str = "remote_bye") -> None:
        """The far end hangs up."""
        self.core.finish(reason)

    # ---- the wire --------------------------------------------------------------------------

    def tick(self) -> None:
        """One 20 ms tick at the clock's now: send one agent frame, deliver the caller's."""
        if self.ended:
            return
        if not self.caller and self.after_script == "hangup":
            self.end("remote_bye")
            return
        now = self.clock.now()
        item = self.core.pop()
        out = item[0] if item is not None else None
        if item is None:
            self.sent.append(Sent(now, None, b""))
        else:
            self.sent.append(Sent(now, int(item[1]), item[0].pcm))
            self.core.samples_played += item[0].samples
        heard = self._deliver_caller(out)
        if self.core.tap is not None:
            self.core.tap.on_tick(heard, out.pcm if out is not None else None)
        self.ticks += 1
        self._ticked.set()

    def _deliver_caller(self, out: AudioFrame | None) -> bytes | None:
        frame: AudioFrame | None = None
        while self.caller and frame is None:
            item = self.caller.popleft()
            if isinstance(item, AudioFrame):
                frame = item
            else:
                self.core.put(item)
        if frame is None and self.after_script == "silence":
            frame = AudioFrame.silence()
        if frame is not None and self.echo:
            mine = np.frombuffer(frame.pcm, "<i2").astype(np.int32)
            if out is not None:
                mine = mine + np.frombuffer(out.pcm, "<i2").astype(np.int32) // 10
            frame = AudioFrame(np.clip(mine, -32768, 32767).astype("<i2").tobytes())
        if frame is not None:
            self.core.put(frame)
        while self.caller and not isinstance(self.caller[0], AudioFrame):
            self.core.put(self.caller.popleft())  # events scripted right after this frame
        return frame.pcm if frame is not None else None

    async def run(self) -> None:
        """Tick on the clock until the leg ends (what the calls layer runs)."""
        await self.core.tick_loop(lambda now, missed: self.tick())

    async def pump(self, seconds: float) -> None:
        """Tick on the clock for `seconds` (or until the leg ends)."""
        limit = math.ceil(seconds / TICK - 1e-9)
        await self.core.tick_loop(lambda now, missed: self.tick(), limit=limit)

    async def wait_sent(self, frames: int, timeout: float = 2.0) -> None:
        """Until `frames` frames of agent audio went out (on a real clock: wall seconds)."""
        async with asyncio.timeout(timeout):
            while len(self.audio_sent()) < frames:
                self._ticked.clear()
                await self._ticked.wait()

    def audio_sent(self, utterance: int | None = None) -> list[Sent]:
        """The ticks that carried agent audio (of `utterance`, if given)."""
        return [
            s
            for s in self.sent
            if s.utterance is not None and (utterance is None or s.utterance == utterance)
        ]

    # ---- CallLeg ---------------------------------------------------------------------------

    async def play(self, frame: AudioFrame, utterance: int = 0) -> None:
        await super().play(frame, utterance)
        self.agent_frames.append(frame)

    def offer(self, frame: AudioFrame, utterance: int = 0) -> bool:
        queued = super().offer(frame, utterance)
        if queued:
            self.agent_frames.append(frame)
        return queued

    def flush_playout(self) -> int:
        self.flushes.append(self.clock.now())
        return super().flush_playout()

    def set_tap(self, tap: MediaTap | None) -> None:
        self.taps.append(tap)
        super().set_tap(tap)

    async def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    async def transfer(self, target: str) -> TransferResult:
        if self.ended:
            return TransferResult(ok=False, reason="the call has ended")
        self.transfers.append(TransferRequest(self.clock.now(), target))
        if self.transfer_result.ok:
            self.end("transferred")
        return self.transfer_result

    async def hangup(self, reason: str = "normal") -> None:
        self.hangups.append(reason)
        self.core.finish(reason)

    def stats(self) -> dict[str, int | float]:
        return {"ticks": self.ticks, "frames_out": self.core.samples_played // FRAME_SAMPLES}
