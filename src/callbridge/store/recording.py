"""A call's recording: a stereo WAV, caller left, agent right, one 20 ms frame per media tick.

The recorder is the leg's MediaTap. Each tick appends one interleaved frame (640 bytes) to a
buffered file on the event loop: a memory copy, no system call (the buffer holds more than a
checkpoint's worth). Every `checkpoint_ticks` (1 s) the buffer is written out and a worker
thread rewrites the RIFF and data sizes to cover exactly what was written, then fsyncs. So a
crash loses at most the last second, and the file is a valid WAV at every moment: its header
never claims more than the file holds (a reader of a crashed file gets everything up to the
last checkpoint; anything after it is ignored). `close()` writes the rest and the final sizes.

Only one checkpoint is in flight: if the disk is slower than a second per fsync, checkpoints
are skipped (and the next one covers more) rather than queued behind each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, PIPELINE_RATE
from callbridge.core.log import event

__all__ = ["CHECKPOINT_TICKS", "HEADER_BYTES", "WavRecorder", "wav_header"]

log = logging.getLogger("callbridge.store.recording")

CHANNELS = 2
SAMPLE_BYTES = 2
TICK_BYTES = CHANNELS * FRAME_BYTES  # one tick of both channels: 640 bytes
HEADER_BYTES = 44
CHECKPOINT_TICKS = 50  # 1 s of 20 ms ticks
_SILENCE = bytes(FRAME_BYTES)
_RIFF_SIZE_AT = 4
_DATA_SIZE_AT = 40


def wav_header(data_bytes: int, rate: int = PIPELINE_RATE, channels: int = CHANNELS) -> bytes:
    """A canonical 44-byte PCM16 WAV header for `data_bytes` of samples."""
    block = channels * SAMPLE_BYTES
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 8 * SAMPLE_BYTES),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def _fit(pcm: bytes | None) -> bytes:
    if pcm is None:
        return _SILENCE
    if len(pcm) == FRAME_BYTES:
        return pcm
    return pcm[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")  # a short frame: padded with silence


def interleave(left: bytes, right: bytes) -> bytes:
    """Two PCM16 frames as one stereo frame (L R L R ...). Extended-slice copies of bytes:
    a few microseconds, no numpy round trip."""
    out = bytearray(2 * len(left))
    out[0::4] = left[0::2]
    out[1::4] = left[1::2]
    out[2::4] = right[0::2]
    out[3::4] = right[1::2]
    return bytes(out)


def _update_sizes(fd: int, data_bytes: int, sync: bool) -> None:
    # The data is written before its size: the header never claims more than the file holds.
    os.pwrite(fd, struct.pack("<I", 36 + data_bytes), _RIFF_SIZE_AT)
    os.pwrite(fd, struct.pack("<I", data_bytes), _DATA_SIZE_AT)
    if sync:
        os.fsync(fd)


class WavRecorder:
    """MediaTap writing `path`. Create it, give it to the leg, `await close()` at hang-up.

    `io` runs the checkpoints (size rewrite + fsync); it is shared by every call's recorder
    and should have few threads: the work is disk-bound.
    """

    def __init__(
        self,
        path: Path,
        io: concurrent.futures.Executor,
        *,
        checkpoint_ticks: int = CHECKPOINT_TICKS,
        fsync: bool = True,
    ) -> None:
        if checkpoint_ticks <= 0:
            raise ValueError("checkpoint_ticks must be > 0")
        self.path = path
        self._io = io
        self._checkpoint_ticks = checkpoint_ticks
        self._sync = fsync
        # Larger than a checkpoint's data: ticks never cause a write system call.
        buffering = max(1 << 16, 2 * checkpoint_ticks * TICK_BYTES)
        self._file: BinaryIO | None = path.open("wb", buffering=buffering)
        self._file.write(wav_header(0))
        self._file.flush()
        self._fd = self._file.fileno()
        self.ticks = 0
        self.checkpointed_ticks = 0  # ticks covered by the header on disk
        self._since = 0  # ticks since the last checkpoint attempt
        self._pending: concurrent.futures.Future[None] | None = None
        self.skipped_checkpoints = 0
        self.failed = False

    @property
    def duration(self) -> float:
        return self.ticks * FRAME_SAMPLES / PIPELINE_RATE

    @property
    def closed(self) -> bool:
        return self._file is None

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None:
        f = self._file
        if f is None or self.failed:
            return
        try:
            f.write(interleave(_fit(caller), _fit(agent)))
        except OSError as exc:  # disk full: the call goes on, the recording stops here
            self._fail(exc)
            return
        self.ticks += 1
        self._since += 1
        if self._since >= self._checkpoint_ticks:
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self._pending is not None and not self._pending.done():
            # The disk is behind: try again next tick; the checkpoint then covers more.
            if self._since % self._checkpoint_ticks == 0:
                self.skipped_checkpoints += 1
            return
        assert self._file is not None
        self._since = 0
        try:
            self._file.flush()  # one write(2) of <= 1 s of audio into the page cache
        except OSError as exc:
            self._fail(exc)
            return
        ticks = self.ticks
        self._pending = self._io.submit(_update_sizes, self._fd, ticks * TICK_BYTES, self._sync)
        self._pending.add_done_callback(lambda fut: self._checkpointed(fut, ticks))

    def _checkpointed(self, fut: concurrent.futures.Future[None], ticks: int) -> None:
        # Runs on the io thread; a plain int store is atomic under the GIL.
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            event(log, "recording.checkpoint_failed", logging.WARNING, error=str(exc))
            return
        self.checkpointed_ticks = max(self.checkpointed_ticks, ticks)

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        event(log, "recording.failed", logging.ERROR, path=str(self.path), error=str(exc))

    async def drain(self) -> None:
        """Wait for the checkpoint in flight (tests; `close` does it too).

        Waits here and below are shielded: cancelling a wrapped future would cancel the
        queued file work itself (asyncio chains the cancellation), losing a write."""
        pending = self._pending
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(pending))

    def close_soon(self) -> concurrent.futures.Future[None] | None:
        """Queue the finalisation (the rest of the data, the final sizes, fsync, close) and
        return its future; None if already closed. The tap is inert from now on (a tick
        arriving late is dropped). Synchronous, so a cancelled caller cannot skip it."""
        f = self._file
        if f is None:
            return None
        self._file = None
        ticks = self.ticks
        pending = self._pending

        def finish() -> None:
            if pending is not None:  # an older checkpoint must not land after the final sizes
                concurrent.futures.wait([pending])
            try:
                f.flush()
                _update_sizes(f.fileno(), ticks * TICK_BYTES, self._sync)
            finally:
                f.close()

        done = self._io.submit(finish)
        done.add_done_callback(lambda fut: self._checkpointed(fut, ticks))
        self._pending = done
        return done

    async def close(self) -> None:
        """`close_soon` and wait for it. Idempotent."""
        done = self.close_soon()
        if done is None:
            await self.drain()
            return
        try:
            await asyncio.shield(asyncio.wrap_future(done))
        except OSError as exc:
            self._fail(exc)
