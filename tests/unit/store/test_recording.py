"""WavRecorder: stereo alignment, a valid WAV after every checkpoint (read back with the
stdlib `wave` module), crash simulation (a copy taken mid-call, and a process killed
mid-call), finalisation, slow disks and failures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES
from callbridge.store.recording import TICK_BYTES, WavRecorder, interleave, wav_header


@pytest.fixture
def io() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    yield pool
    pool.shutdown(wait=True)


def frame(value: int) -> bytes:
    return np.full(FRAME_SAMPLES, value, dtype="<i2").tobytes()


def read(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    """(params, samples as an (n, 2) array) of the WAV at `path`."""
    with wave.open(str(path)) as w:
        params = w.getparams()
        data = w.readframes(w.getnframes())
    return params, np.frombuffer(data, dtype="<i2").reshape(-1, 2)


def per_tick(samples: np.ndarray) -> list[tuple[int, int]]:
    """(left, right) of each 20 ms tick, for recordings of constant frames."""
    ticks = samples.reshape(-1, FRAME_SAMPLES, 2)
    assert (ticks == ticks[:, :1, :]).all(), "a tick is not constant: misaligned samples"
    return [(int(t[0, 0]), int(t[0, 1])) for t in ticks]


def test_interleave_puts_caller_left_and_agent_right() -> None:
    left = np.arange(160, dtype="<i2")
    right = -np.arange(160, dtype="<i2") - 1000
    out = np.frombuffer(interleave(left.tobytes(), right.tobytes()), dtype="<i2").reshape(-1, 2)
    assert (out[:, 0] == left).all() and (out[:, 1] == right).all()


@given(
    st.binary(min_size=FRAME_BYTES, max_size=FRAME_BYTES),
    st.binary(min_size=FRAME_BYTES, max_size=FRAME_BYTES),
)
def test_interleave_round_trips(left: bytes, right: bytes) -> None:
    out = np.frombuffer(interleave(left, right), dtype="<i2").reshape(-1, 2)
    assert out[:, 0].tobytes() == left and out[:, 1].tobytes() == right


def test_header_is_what_the_wave_module_writes(tmp_path: Path) -> None:
    ref = tmp_path / "ref.wav"
    with wave.open(str(ref), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(TICK_BYTES * 3))
    assert ref.read_bytes()[:44] == wav_header(TICK_BYTES * 3)


async def test_one_frame_per_tick_on_each_channel_aligned_with_silence_for_none(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io, checkpoint_ticks=50)
    script: list[tuple[int | None, int | None]] = [
        (1, None), (2, -2), (None, -3), (None, None), (5, -5), (6, None),
    ]  # fmt: skip
    for caller, agent in script:
        rec.on_tick(
            frame(caller) if caller is not None else None,
            frame(agent) if agent is not None else None,
        )
    await rec.close()
    params, samples = read(rec.path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert params.nframes == len(script) * FRAME_SAMPLES
    assert per_tick(samples) == [(c or 0, a or 0) for c, a in script]
    assert rec.duration == pytest.approx(0.12)


async def test_short_and_long_frames_are_fitted_to_one_tick(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    rec.on_tick(frame(7)[:100], frame(9) + frame(9))
    await rec.close()
    _, samples = read(rec.path)
    assert len(samples) == FRAME_SAMPLES
    assert (samples[:50, 0] == 7).all() and (samples[50:, 0] == 0).all()
    assert (samples[:, 1] == 9).all()


async def test_header_is_valid_after_every_checkpoint(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io, checkpoint_ticks=5)
    _, samples = read(rec.path)  # valid (empty) from the start
    assert len(samples) == 0
    for i in range(1, 23):
        rec.on_tick(frame(i), frame(-i))
        await rec.drain()
        params, samples = read(rec.path)
        covered = i - i % 5
        assert params.nframes == covered * FRAME_SAMPLES, i
        assert rec.checkpointed_ticks == covered
        assert per_tick(samples) == [(k, -k) for k in range(1, covered + 1)]
    await rec.close()
    params, samples = read(rec.path)
    assert params.nframes == 22 * FRAME_SAMPLES
    assert rec.path.stat().st_size == 44 + 22 * TICK_BYTES


async def test_a_copy_taken_mid_call_is_a_valid_wav_up_to_the_last_checkpoint(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io, checkpoint_ticks=50)
    for i in range(130):
        rec.on_tick(frame(i), None)
        if i % 50 == 49:
            await rec.drain()  # a second between checkpoints: the last one is done
    crashed = tmp_path / "copy.wav"
    shutil.copy(rec.path, crashed)
    params, samples = read(crashed)
    assert params.nframes == 100 * FRAME_SAMPLES  # lost: the last 30 ticks (< 1 s)
    assert per_tick(samples) == [(i, 0) for i in range(100)]
    await rec.close()
    assert read(rec.path)[0].nframes == 130 * FRAME_SAMPLES


def test_a_process_killed_mid_call_loses_at_most_the_last_checkpoint_period(
    tmp_path: Path,
) -> None:
    """The recorder in a child process killed by SIGKILL (no buffers flushed, no close)
    2.74 s into a call, its io thread keeping up (a checkpoint is done within its 200 ms):
    the file holds exactly the first 2.6 s, the last checkpoint, and says so."""
    path = tmp_path / "killed.wav"
    script = textwrap.dedent(f"""
        import asyncio, concurrent.futures, os, signal
        from pathlib import Path
        import numpy as np
        from callbridge.store.recording import WavRecorder

        async def main():
            io = concurrent.futures.ThreadPoolExecutor(1)
            rec = WavRecorder(Path({str(path)!r}), io)
            for i in range(137):
                rec.on_tick(np.full(160, i, "<i2").tobytes(), np.full(160, -i, "<i2").tobytes())
                await rec.drain()
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "src"))
    done = subprocess.run([sys.executable, "-c", script], timeout=60, env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    params, samples = read(path)
    assert params.nframes == 130 * FRAME_SAMPLES
    assert per_tick(samples) == [(i, -i) for i in range(130)]
    assert path.stat().st_size == 44 + 130 * TICK_BYTES  # nothing after the last checkpoint


class GatedExecutor(concurrent.futures.Executor):
    """Runs jobs on a thread, each only once the test opens the gate (a slow disk)."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.gate = threading.Event()
        self.jobs = 0

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        self.jobs += 1

        def gated() -> Any:
            self.gate.wait(10)
            return fn(*args, **kwargs)

        return self.pool.submit(gated)


async def test_a_slow_disk_skips_checkpoints_instead_of_queueing_them(tmp_path: Path) -> None:
    io = GatedExecutor()
    rec = WavRecorder(tmp_path / "c.wav", io, checkpoint_ticks=5)
    for i in range(20):  # 4 checkpoints due, the first never finishes meanwhile
        rec.on_tick(frame(i), None)
    assert io.jobs == 1 and rec.skipped_checkpoints == 3
    assert read(rec.path)[0].nframes == 0  # header still says empty: valid, nothing claimed
    io.gate.set()
    await rec.drain()
    assert rec.checkpointed_ticks == 5
    rec.on_tick(frame(20), None)  # the next due checkpoint covers everything so far
    await rec.drain()
    assert rec.checkpointed_ticks == 21
    await rec.close()
    assert read(rec.path)[0].nframes == 21 * FRAME_SAMPLES
    io.pool.shutdown()


async def test_close_finalises_even_when_its_caller_is_cancelled(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io, checkpoint_ticks=50)
    for i in range(30):
        rec.on_tick(frame(i), frame(i))
    task = asyncio.create_task(rec.close())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    io.submit(lambda: None).result()  # the queued finalisation has run
    assert read(rec.path)[0].nframes == 30 * FRAME_SAMPLES
    assert rec.closed


async def test_ticks_after_close_are_ignored_and_close_is_idempotent(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io)
    rec.on_tick(frame(1), frame(2))
    await rec.close()
    rec.on_tick(frame(3), frame(4))
    await rec.close()
    assert read(rec.path)[0].nframes == FRAME_SAMPLES


async def test_a_write_error_stops_the_recording_not_the_call(
    tmp_path: Path, io: concurrent.futures.Executor, caplog: pytest.LogCaptureFixture
) -> None:
    rec = WavRecorder(tmp_path / "c.wav", io, checkpoint_ticks=2)
    for i in range(2):
        rec.on_tick(frame(i), None)
    await rec.drain()
    assert rec.checkpointed_ticks == 2
    # The disk fills up: the recorder's descriptor now writes to /dev/full (ENOSPC).
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, rec._fd)
    os.close(full)
    for i in range(2, 4):
        rec.on_tick(frame(i), None)  # must not raise
    await rec.drain()
    assert rec.failed
    assert [r.msg for r in caplog.records if r.levelno >= logging.ERROR] == ["recording.failed"]
    rec.on_tick(frame(9), None)  # ignored from now on
    await rec.close()
    assert rec.ticks == 4 and rec.checkpointed_ticks == 2
    assert read(rec.path)[0].nframes == 2 * FRAME_SAMPLES  # valid: up to the failure
