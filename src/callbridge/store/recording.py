"""A call's recording: a stereo WAV, caller left, agent right, one 20 ms frame per media tick.

The recorder is the leg's MediaTap. Each tick appends one interleaved frame (640 bytes) to a
buffer in memory on the event loop: no system call. Every `CHECKPOINT_TICKS` (200 ms) the
buffer is handed to the `store-io` thread, which appends it to the file with one write(2) and
then rewrites the RIFF and data sizes (two 4-byte pwrite(2)s) to cover exactly what was
written. A `kill -9` loses at most the last checkpoint period: written data lives in the
kernel's page cache, which survives the death of the process, so the file on disk holds it
whether or not it was fsynced. fsync only matters for a power loss or a kernel crash, so it
runs at most once a second (`FSYNC_TICKS`) rather than at every checkpoint: each fsync is a
disk flush, and this runs for every call.

The file is a valid WAV at every moment: the data is written before its size, so the header
never claims more than the file holds (a reader of a crashed file gets everything up to the
last checkpoint; anything after it is ignored until `recover` fixes the sizes on restart).
`close()` writes the rest and the final sizes.

Only one checkpoint is in flight: if the disk is slower than a checkpoint period, checkpoints
are skipped (and the next one covers more) rather than queued behind each other. A disk that
stops answering for `MAX_BUFFERED_TICKS` stops the recording (the call goes on): memory stays
bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, PIPELINE_RATE
from callbridge.core.log import event

__all__ = [
    "CHECKPOINT_TICKS",
    "FSYNC_TICKS",
    "HEADER_BYTES",
    "MAX_BUFFERED_TICKS",
    "RecoveredWav",
    "WavRecorder",
    "recover_wav",
    "wav_header",
]

log = logging.getLogger("callbridge.store.recording")

CHANNELS = 2
SAMPLE_BYTES = 2
TICK_BYTES = CHANNELS * FRAME_BYTES  # one tick of both channels: 640 bytes
HEADER_BYTES = 44
CHECKPOINT_TICKS = 10  # 200 ms of 20 ms ticks: the most a killed process loses
FSYNC_TICKS = 50  # 1 s: fsync at most this often (power loss, not a process kill)
MAX_BUFFERED_TICKS = 3000  # 60 s (1.9 MB) unwritten: the disk has stopped, give up
_SILENCE = bytes(FRAME_BYTES)
_RIFF_SIZE_AT = 4
_DATA_SIZE_AT = 40
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # never O_APPEND: see _flush


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


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:  # a regular file takes it whole, short of a full disk (then write(2) raises)
        view = view[os.write(fd, view) :]


def _update_sizes(fd: int, data_bytes: int, sync: bool) -> None:
    # The data is written before its size: the header never claims more than the file holds.
    os.pwrite(fd, struct.pack("<I", 36 + data_bytes), _RIFF_SIZE_AT)
    os.pwrite(fd, struct.pack("<I", data_bytes), _DATA_SIZE_AT)
    if sync:
        os.fsync(fd)


class WavRecorder:
    """MediaTap writing `path`. Create it, give it to the leg, `await close()` at hang-up.

    `io` runs the checkpoints (data write, size rewrite, fsync); it is shared by every call's
    recorder and should have few threads: the work is disk-bound.
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
        self._fd = os.open(path, _OPEN_FLAGS, 0o666)
        try:
            _write_all(self._fd, wav_header(0))
        except BaseException:
            os.close(self._fd)
            raise
        self._buf = bytearray()  # ticks not yet handed to the io thread
        self._open = True
        self.ticks = 0
        self.checkpointed_ticks = 0  # ticks covered by the header on disk
        self.checkpoints = 0  # checkpoints handed to the io thread
        self.fsyncs = 0  # ... of which with an fsync
        self._synced_at = 0  # ticks covered by the last fsync requested
        self._since = 0  # ticks since the last checkpoint attempt
        self._pending: concurrent.futures.Future[None] | None = None
        self.skipped_checkpoints = 0
        self.failed = False  # set on the loop or the io thread; a bool store is atomic

    @property
    def duration(self) -> float:
        return self.ticks * FRAME_SAMPLES / PIPELINE_RATE

    @property
    def closed(self) -> bool:
        return not self._open

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None:
        if not self._open or self.failed:
            return
        self._buf += interleave(_fit(caller), _fit(agent))
        self.ticks += 1
        self._since += 1
        if self._since >= self._checkpoint_ticks:
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self._pending is not None and not self._pending.done():
            # The disk is behind: try again next tick; the checkpoint then covers more.
            if self._since % self._checkpoint_ticks == 0:
                self.skipped_checkpoints += 1
            if len(self._buf) >= MAX_BUFFERED_TICKS * TICK_BYTES:
                self._buf = bytearray()
                self._fail(OSError(f"the disk took no data for {self._since} ticks"))
            return
        self._since = 0
        data, self._buf = self._buf, bytearray()
        ticks = self.ticks
        # Counted in ticks, i.e. in recorded (real) time: at most one fsync a second.
        sync = self._sync and ticks - self._synced_at >= FSYNC_TICKS
        if sync:
            self._synced_at = ticks
            self.fsyncs += 1
        self.checkpoints += 1
        self._pending = self._io.submit(self._flush, data, ticks, sync)

    def _flush(self, data: bytearray, ticks: int, sync: bool) -> None:
        """On the io thread: append `data`, then make the header cover `ticks`.

        The data goes where the file's offset is (write(2)), the sizes at theirs (pwrite(2),
        which leaves the offset alone); the file is not O_APPEND, under which Linux's pwrite
        would append instead."""
        if self.failed:
            return
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            # Where the file ends is unknown now: stop here; the header keeps its last true
            # size, so the file stays a valid WAV of everything before.
            self._fail(exc)
            return
        try:
            _update_sizes(self._fd, ticks * TICK_BYTES, sync)
        except OSError as exc:  # the data is there: the next checkpoint's sizes cover it
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
        if not self._open:
            return None
        self._open = False
        data, self._buf = self._buf, bytearray()
        ticks, fd, pending = self.ticks, self._fd, self._pending

        def finish() -> None:
            if pending is not None:  # an older checkpoint must not land after the final sizes
                concurrent.futures.wait([pending])
            try:
                self._flush(data, ticks, self._sync)
            finally:
                os.close(fd)

        done = self._io.submit(finish)
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


# ---- after a crash ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoveredWav:
    seconds: float  # the audio the file holds
    fixed: bool  # its header's sizes were stale (the process died between checkpoints)


def recover_wav(path: Path) -> RecoveredWav | None:
    """The recording of a call whose process died: make its header claim exactly the whole
    sample frames the file holds (the file is the truth: data written after the last size
    rewrite is there too) and say how long it is. None when there is no such file or it is
    not a PCM WAV with the canonical 44-byte header this module writes (left untouched).
    O(1): a 44-byte read and a stat, plus two 4-byte writes and an fsync when stale."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = os.pread(fd, HEADER_BYTES, 0)
        if (
            len(head) < HEADER_BYTES
            or head[:4] != b"RIFF"
            or head[8:16] != b"WAVEfmt "
            or head[36:40] != b"data"
        ):
            return None
        fmt_size, fmt, _, _, byte_rate, block, _ = struct.unpack("<IHHIIHH", head[16:36])
        if fmt_size != 16 or fmt != 1 or byte_rate == 0 or block == 0:
            return None
        size = os.fstat(fd).st_size
        data = (size - HEADER_BYTES) // block * block
        riff, claimed = struct.unpack("<I", head[4:8])[0], struct.unpack("<I", head[40:44])[0]
        fixed = (riff, claimed) != (36 + data, data)
        if fixed:
            if size != HEADER_BYTES + data:  # a torn last sample frame is not audio
                os.ftruncate(fd, HEADER_BYTES + data)
            _update_sizes(fd, data, sync=True)
        return RecoveredWav(data / byte_rate, fixed)
    except OSError as exc:
        event(log, "recording.recover_failed", logging.WARNING, path=str(path), error=str(exc))
        return None
    finally:
        os.close(fd)
