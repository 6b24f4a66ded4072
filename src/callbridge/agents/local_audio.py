"""The call on this machine's speakers and microphone (`callbridge call --listen`): the person
at the keyboard talks to the far end, no agent in between.

PortAudio (through sounddevice) runs the device at the call's 8 kHz in 20 ms blocks, with
blocking reads and writes on one thread of its own, every 20 ms: the next frame the far end
sent (or silence) to the speakers, one frame from the microphone into the call. The speaker
queue holds at most 200 ms (older frames are dropped: latency, not a backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from typing import Any, Protocol

from callbridge.core.errors import AgentError, CallEnded
from callbridge.core.frames import FRAME_SAMPLES, PIPELINE_RATE, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import CallLeg

log = logging.getLogger("callbridge.agents.local_audio")

SPEAKER_QUEUE_FRAMES = 10


class AudioDeviceError(AgentError, RuntimeError):
    """No usable audio device (or no PortAudio): the message says what to do."""


class DuplexStream(Protocol):
    def start(self) -> None: ...
    def write(self, data: bytes) -> Any: ...
    def read(self, frames: int) -> tuple[Any, bool]: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


def open_device(device: str | None = None) -> DuplexStream:
    """A started 8 kHz mono 16-bit duplex stream on `device` (None: the system default)."""
    try:
        import sounddevice as sd  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except (ImportError, OSError) as exc:
        raise AudioDeviceError(
            f"audio needs PortAudio ({exc}): apt-get install libportaudio2, pip install sounddevice"
        ) from None
    try:
        stream = sd.RawStream(
            samplerate=PIPELINE_RATE, channels=1, dtype="int16", blocksize=FRAME_SAMPLES,
            device=device,
        )  # fmt: skip
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        found = "" if _device_count(sd) else " (this machine has none)"
        raise AudioDeviceError(
            f"no audio device to listen with{found}: {exc}. List them with `python -m "
            "sounddevice`; name one with --listen DEVICE"
        ) from None
    return stream  # type: ignore[no-any-return]


def _device_count(sd: Any) -> int:
    try:
        return len(sd.query_devices())
    except Exception:
        return 0


class LocalAudioAgent:
    """`stream`: the device, opened beforehand (`open_device`) so a missing one is known
    before anything is dialled; None opens `device` when the call needs it."""

    def __init__(self, device: str | None = None, stream: DuplexStream | None = None) -> None:
        self.device = device
        self._stream = stream
        self.frames_out = 0  # to the speakers
        self.frames_in = 0  # from the microphone
        self._speaker: queue.Queue[bytes | None] = queue.Queue(SPEAKER_QUEUE_FRAMES)
        self._mic: asyncio.Queue[bytes] = asyncio.Queue()
        self._worker: threading.Thread | None = None
        self._early: asyncio.Task[None] | None = None
        self._answered = False

    def discard(self) -> None:
        """Close the device without a call (the call it was opened for failed). Early media,
        if it started, closes it itself when the call ends."""
        stream, self._stream = self._stream, None
        if self._worker is not None or stream is None:
            return
        with contextlib.suppress(Exception):
            stream.stop()
            stream.close()

    def early(self, leg: CallLeg) -> None:
        """Early media (a 183 with SDP: ringback, an announcement) to the speakers until the
        answer; the microphone stays off the line until then."""
        if self._early is None and not self._answered:
            self._start_device()
            self._early = asyncio.get_running_loop().create_task(self._early_media(leg))

    async def run(self, leg: CallLeg) -> None:
        self._answered = True
        if self._early is not None:
            self._early.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._early
        self._start_device()
        while not self._mic.empty():
            self._mic.get_nowait()  # what the microphone heard while it rang: not said
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._to_call(leg))
                async for item in leg.inputs():
                    if isinstance(item, AudioFrame):
                        _put_latest(self._speaker, item.pcm)
                raise CallEnded("remote")
        except* CallEnded:
            pass
        finally:
            await self._stop_device()

    async def _early_media(self, leg: CallLeg) -> None:
        try:
            async for item in leg.inputs():
                if isinstance(item, AudioFrame):
                    _put_latest(self._speaker, item.pcm)
                while not self._mic.empty():
                    self._mic.get_nowait()
        except CallEnded:
            pass
        finally:
            if not self._answered:  # never answered: nobody else will close the device
                await self._stop_device()

    def _start_device(self) -> None:
        if self._worker is not None:
            return
        stream = self._stream if self._stream is not None else open_device(self.device)
        self._worker = threading.Thread(
            target=self._device_loop,
            args=(stream, self._speaker, self._mic, asyncio.get_running_loop()),
            name="local-audio",
        )
        self._worker.start()
        event(log, "listen.started", device=self.device or "default")

    async def _stop_device(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        _put_latest(self._speaker, None)
        await asyncio.to_thread(worker.join, 5)
        event(log, "listen.stopped", to_speakers=self.frames_out, from_microphone=self.frames_in)

    async def _to_call(self, leg: CallLeg) -> None:
        while True:
            await leg.play(AudioFrame(await self._mic.get()))

    def _device_loop(
        self,
        stream: DuplexStream,
        speaker: queue.Queue[bytes | None],
        mic: asyncio.Queue[bytes],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        silence = bytes(2 * FRAME_SAMPLES)
        start, n = time.monotonic(), 0
        try:
            while True:
                # Our own 20 ms grid: the microphone must flow before the far end says anything
                # (an echo, an IVR waiting for speech), and a device without a clock of its
                # own (ALSA's null) must not run flat out. A real device's blocking calls keep
                # to its clock within its buffer.
                n += 1
                wait = start + n * FRAME_SAMPLES / PIPELINE_RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                frame: bytes | None = silence
                with contextlib.suppress(queue.Empty):
                    frame = speaker.get_nowait()
                if frame is None:
                    return
                if frame is not silence:
                    self.frames_out += 1
                stream.write(frame)
                data, _overflowed = stream.read(FRAME_SAMPLES)
                self.frames_in += 1
                loop.call_soon_threadsafe(mic.put_nowait, bytes(data))
        except Exception as exc:  # the device went away: the call goes on without it
            event(log, "listen.device_failed", logging.ERROR, error=repr(exc))
        finally:
            with contextlib.suppress(Exception):
                stream.stop()
                stream.close()


def _put_latest(q: queue.Queue[bytes | None], item: bytes | None) -> None:
    """Queue `item`, dropping the oldest when full (latency over completeness)."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
