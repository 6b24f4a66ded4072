"""The recorder's checkpoint cadence, counted in ticks (no clock, no sleeping): what a tick
costs on the loop (nothing but memory), what a checkpoint costs on the io thread (one
write(2), 8 bytes of pwrite(2)), how often it fsyncs (once a second); and `recover_wav`,
which makes a crashed recording's header match what its file holds."""

from __future__ import annotations

import concurrent.futures
import os
import struct
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.core.frames import FRAME_SAMPLES
from callbridge.store import recording
from callbridge.store.recording import (
    CHECKPOINT_TICKS,
    FSYNC_TICKS,
    MAX_BUFFERED_TICKS,
    TICK_BYTES,
    RecoveredWav,
    WavRecorder,
    recover_wav,
    wav_header,
)


def frame(value: int) -> bytes:
    return np.full(FRAME_SAMPLES, value, dtype="<i2").tobytes()


def nframes(path: Path) -> int:
    with wave.open(str(path)) as w:
        return int(w.getnframes())


class Syscalls:
    """`os` for the recording module, counting the file system calls it makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # (name, bytes)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = os

        def write(fd: int, data: Any) -> int:
            self.calls.append(("write", len(data)))
            return real.write(fd, data)

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            self.calls.append(("pwrite", len(data)))
            return real.pwrite(fd, data, offset)

        def fsync(fd: int) -> None:
            self.calls.append(("fsync", 0))

        fake = SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
        fake.write, fake.pwrite, fake.fsync = write, pwrite, fsync
        monkeypatch.setattr(recording, "os", fake)

    def take(self) -> list[tuple[str, int]]:
        calls, self.calls = self.calls, []
        return calls


class QueuedExecutor(concurrent.futures.Executor):
    """Runs nothing until the test says so: `run()` is the io thread catching up."""

    def __init__(self) -> None:
        self.jobs: list[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = []

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.jobs.append((fut, lambda: fn(*args, **kwargs)))
        return fut

    def run(self) -> int:
        ran = 0
        while self.jobs:
            fut, job = self.jobs.pop(0)
            fut.set_running_or_notify_cancel()
            try:
                fut.set_result(job())
            except BaseException as exc:
                fut.set_exception(exc)
            ran += 1
        return ran


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> Syscalls:
    s = Syscalls()
    s.install(monkeypatch)
    return s


@pytest.fixture
def io() -> Iterator[QueuedExecutor]:
    ex = QueuedExecutor()
    yield ex
    ex.run()


def test_the_default_cadence_is_200_ms_with_an_fsync_a_second() -> None:
    assert (CHECKPOINT_TICKS, FSYNC_TICKS) == (10, 50)  # of 20 ms ticks


def test_a_tick_makes_no_system_call_and_a_checkpoint_one_write_and_8_bytes_of_pwrite(
    tmp_path: Path, syscalls: Syscalls, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    syscalls.take()  # the header, at creation
    for i in range(1, 3 * CHECKPOINT_TICKS + 1):
        rec.on_tick(frame(i), frame(-i))
        assert syscalls.take() == [], i  # on the loop: memory only, checkpoint or not
        assert len(io.jobs) == (1 if i % CHECKPOINT_TICKS == 0 else 0), i
        if io.jobs:
            io.run()  # the io thread: the 200 ms of audio, then the two sizes
            assert syscalls.take() == [
                ("write", CHECKPOINT_TICKS * TICK_BYTES), ("pwrite", 4), ("pwrite", 4),
            ]  # fmt: skip
            assert rec.checkpointed_ticks == i
            assert nframes(rec.path) == i * FRAME_SAMPLES  # a valid WAV of all of it


def test_checkpoints_every_10_ticks_and_fsyncs_every_50(
    tmp_path: Path, syscalls: Syscalls, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    covered, synced = [], []
    for i in range(1, 251):  # 5 s
        rec.on_tick(frame(i), None)
        if io.run():
            covered.append(rec.checkpointed_ticks)
            if ("fsync", 0) in syscalls.take():
                synced.append(i)
    assert covered == list(range(10, 251, 10))
    assert synced == [50, 100, 150, 200, 250]
    assert (rec.checkpoints, rec.fsyncs) == (25, 5)


def test_without_fsync_a_checkpoint_never_syncs(
    tmp_path: Path, syscalls: Syscalls, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io, fsync=False)
    for i in range(120):
        rec.on_tick(frame(i), None)
        io.run()
    rec.close_soon()
    io.run()
    assert ("fsync", 0) not in syscalls.take() and rec.fsyncs == 0


def test_a_slow_io_thread_skips_checkpoints_and_the_next_one_covers_more(
    tmp_path: Path, syscalls: Syscalls, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    for i in range(1, 36):  # the first checkpoint is stuck for 25 ticks
        rec.on_tick(frame(i), None)
    assert len(io.jobs) == 1 and rec.skipped_checkpoints == 2
    io.run()
    assert rec.checkpointed_ticks == 10
    syscalls.take()
    rec.on_tick(frame(36), None)  # overdue: at once, with everything since
    io.run()
    assert rec.checkpointed_ticks == 36
    assert syscalls.take() == [("write", 26 * TICK_BYTES), ("pwrite", 4), ("pwrite", 4)]
    # ... and its period starts again from there
    for i in range(37, 46):
        rec.on_tick(frame(i), None)
    assert io.jobs == []
    rec.on_tick(frame(46), None)
    assert len(io.jobs) == 1


def test_fsync_stays_at_once_a_second_when_checkpoints_are_skipped(
    tmp_path: Path, syscalls: Syscalls, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    synced = []
    for i in range(1, 301):
        rec.on_tick(frame(i), None)
        # the io thread only now and then
        if i % 23 == 0 and io.run() and ("fsync", 0) in syscalls.take():
            synced.append(rec.checkpointed_ticks)
    assert synced, "never synced"
    gaps = [b - a for a, b in zip([0, *synced], synced, strict=False)]
    assert min(gaps) >= FSYNC_TICKS, synced


def test_a_disk_that_stops_answering_stops_the_recording_not_the_memory(
    tmp_path: Path, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    for i in range(MAX_BUFFERED_TICKS + 20):
        rec.on_tick(frame(i % 100), None)
    assert rec.failed and len(rec._buf) == 0
    ticks = rec.ticks
    rec.on_tick(frame(1), None)
    assert rec.ticks == ticks  # inert
    io.run()  # the stuck checkpoint finally runs: it must not write after the failure
    rec.close_soon()
    io.run()
    assert nframes(rec.path) == 0 and rec.path.stat().st_size == 44  # valid, and empty


def test_close_writes_the_rest_after_the_checkpoint_in_flight(
    tmp_path: Path, syscalls: Syscalls, io: QueuedExecutor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    for i in range(1, 15):
        rec.on_tick(frame(i), frame(-i))
    done = rec.close_soon()
    assert done is not None and rec.closed
    io.run()
    done.result()
    assert nframes(rec.path) == 14 * FRAME_SAMPLES
    with wave.open(str(rec.path)) as w:
        samples = np.frombuffer(w.readframes(14 * FRAME_SAMPLES), "<i2").reshape(14, -1, 2)
    assert samples[:, 0, 0].tolist() == list(range(1, 15))
    assert syscalls.take()[-1] == ("fsync", 0)  # the final sizes are synced


# ---- recover_wav --------------------------------------------------------------------------


def crashed_file(path: Path, claimed: int, data: bytes) -> None:
    """A recording as a killed process leaves it: a header claiming `claimed` bytes, and
    `data` in the file."""
    path.write_bytes(wav_header(claimed) + data)


def pcm(ticks: int) -> bytes:
    return b"".join(frame(i) + frame(-i) for i in range(ticks))  # not interleaved: fine here


def test_recover_extends_a_stale_header_to_the_data_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    crashed_file(path, 100 * TICK_BYTES, pcm(107))  # killed between write(2) and pwrite(2)
    assert nframes(path) == 100 * FRAME_SAMPLES
    got = recover_wav(path)
    assert got == RecoveredWav(seconds=107 * 0.02, fixed=True)
    assert nframes(path) == 107 * FRAME_SAMPLES
    assert path.read_bytes()[44:] == pcm(107)


def test_recover_leaves_an_up_to_date_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    crashed_file(path, 50 * TICK_BYTES, pcm(50))
    before = path.stat()
    assert recover_wav(path) == RecoveredWav(seconds=1.0, fixed=False)
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_recover_cuts_a_torn_sample_frame_and_a_header_that_claims_too_much(
    tmp_path: Path,
) -> None:
    torn = tmp_path / "torn.wav"
    crashed_file(torn, 0, pcm(3) + b"\x01\x02\x03")  # 3 bytes of a 4-byte stereo frame
    assert recover_wav(torn) == RecoveredWav(seconds=0.06, fixed=True)
    assert torn.stat().st_size == 44 + 3 * TICK_BYTES
    short = tmp_path / "short.wav"  # a power loss kept the header's page, not the data's
    crashed_file(short, 90 * TICK_BYTES, pcm(40))
    assert recover_wav(short) == RecoveredWav(seconds=0.8, fixed=True)
    assert nframes(short) == 40 * FRAME_SAMPLES


def test_recover_ignores_what_is_not_its_wav(tmp_path: Path) -> None:
    assert recover_wav(tmp_path / "missing.wav") is None
    for name, content in {
        "empty.wav": b"",
        "short.wav": wav_header(0)[:20],
        "text.wav": b"x" * 200,
        "float.wav": wav_header(0)[:20] + struct.pack("<H", 3) + wav_header(0)[22:] + pcm(2),
        "extensible.wav": wav_header(0)[:16] + struct.pack("<I", 40) + wav_header(0)[20:],
    }.items():
        (tmp_path / name).write_bytes(content)
        assert recover_wav(tmp_path / name) is None, name
        assert (tmp_path / name).read_bytes() == content, name  # untouched


@settings(max_examples=60, deadline=None)
@given(claimed=st.integers(0, 4000), data_len=st.integers(0, 4000))
def test_a_recovered_file_is_a_valid_wav_of_every_whole_frame(
    tmp_path_factory: pytest.TempPathFactory, claimed: int, data_len: int
) -> None:
    path = tmp_path_factory.mktemp("r") / "c.wav"
    data = bytes(range(256)) * 16
    crashed_file(path, claimed, data[:data_len])
    got = recover_wav(path)
    whole = data_len // 4
    assert got is not None and got.seconds == pytest.approx(whole * 4 / 32000)
    assert nframes(path) == whole
    assert path.read_bytes()[44:] == data[: whole * 4]
    again = recover_wav(path)
    assert again is not None and not again.fixed  # idempotent
