"""VadPool: one batched run per tick for all calls, off the event loop, with deadlines."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from callbridge.agents.vad_pool import VadClosed, VadPool
from callbridge.audio.wav import read_wav
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.frames import AudioFrame
from callbridge.media.vad import Floats, SileroVad, VadConfig, VadResult, VadStream

FIXTURES = Path(__file__).parents[2] / "fixtures" / "audio"
FRAME_BYTES = 320
DEADLINE = 5.0  # real seconds a test may wait for the worker thread


def frames(pcm: bytes) -> list[AudioFrame]:
    step = FRAME_BYTES
    return [AudioFrame(pcm[i : i + step]) for i in range(0, len(pcm) - step + 1, step)]


def noise(seconds: float, std: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.normal(0, std, int(seconds * 8000)).astype("<i2").tobytes()


class RecordingRunner:
    """SileroVad, plus which thread each run happened on and its batch size."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.threads: set[int] = set()
        self.batch_sizes: list[int] = []

    def run(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        self.threads.add(threading.get_ident())
        self.batch_sizes.append(x.shape[0])
        return self.vad.run(x, state)

    def stream(self, config: VadConfig | None = None) -> VadStream:
        return self.vad.stream(config)


class BlockingRunner:
    """Never answers until released: a stuck model."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls = 0

    def run(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        self.calls += 1
        self.started.set()
        self.release.wait(DEADLINE)
        return np.zeros(x.shape[0], np.float32), state

    def stream(self, config: VadConfig | None = None) -> VadStream:
        return VadStream(config)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


async def test_one_batched_run_per_tick_matches_offline_evaluation(vad: SileroVad) -> None:
    speech, _ = read_wav(FIXTURES / "caller_stop.wav")
    signals = [speech[:16000], noise(1.0, 800, 1), speech[8000:24000]]
    runner = RecordingRunner(vad)
    pool = VadPool(runner, FakeClock())
    # no pre-filter (energy floor, noise gate): compare every chunk
    config = VadConfig(silence_dbfs=-math.inf, noise_margin_db=None)
    handles = [pool.register(f"call-{i}", config) for i in range(3)]
    results: list[list[VadResult]] = [[] for _ in handles]
    for k, fs in enumerate(zip(*(frames(s) for s in signals), strict=True)):
        for h, f in zip(handles, fs, strict=True):
            h.feed(f, k * 0.02)
        await pool.evaluate()  # what each tick does
        for h, r in zip(handles, results, strict=True):
            r.extend(await h.probabilities(timeout=0.0))
    await pool.aclose()
    # one run per chunk carried all three calls, on one worker thread that is not the loop's
    assert runner.batch_sizes == [3] * 31  # 1 s of 20 ms frames = 31 whole chunks
    assert pool.runs == 31
    assert len(runner.threads) == 1
    assert threading.get_ident() not in runner.threads
    # the same probabilities as evaluating each call alone
    for sig, got in zip(signals, results, strict=True):
        alone = vad.stream(config)
        alone.feed(sig[: 31 * 512], 0.0)
        vad.evaluate([alone])
        assert [r.probability for r in got] == [r.probability for r in alone.results()]
        assert [r.source for r in got] == ["model"] * 31


async def test_runs_on_the_tick_schedule_only_when_chunks_are_due(vad: SileroVad) -> None:
    clock = FakeClock()
    async with VadPool(vad, clock) as pool:
        await asyncio.sleep(0)  # the tick task takes its start time now
        handle = pool.register("c")
        pcm = noise(0.04, 2000, 2)
        handle.feed(pcm[:320], clock.now())
        handle.feed(pcm[320:640], clock.now())  # 320 samples: one chunk due
        await clock.advance(0.02)
        assert pool.runs == 0  # the first tick is at +32 ms
        assert await handle.probabilities(timeout=0.0) == []
        await clock.advance(0.02)
        got = await handle.probabilities(timeout=DEADLINE)
        assert [r.source for r in got] == ["model"]
        assert pool.runs == 1
        await clock.advance(1.0)  # 31 more ticks with nothing due: no runs
        assert pool.runs == 1
        assert handle.latest == got[0]


async def test_with_coalescing_a_due_chunk_runs_without_waiting_for_the_tick(
    vad: SileroVad,
) -> None:
    clock = FakeClock()
    async with VadPool(vad, clock, coalesce=0.004) as pool:
        await asyncio.sleep(0)
        a, b = pool.register("a"), pool.register("b")
        pcm = noise(0.04, 2000, 3)
        await clock.advance(0.005)  # mid-tick
        a.feed(pcm[:640], clock.now())  # a chunk of call a is due now
        for _ in range(2):
            await clock.advance(0.001)  # 1 ms at a time: the pool's task runs in between
        b.feed(pcm[:640], clock.now())  # b's, within the coalescing window: same batch
        assert pool.runs == 0
        for _ in range(8):
            await clock.advance(0.001)  # 10 ms after a's chunk, 17 ms before the tick
        got_a = await a.probabilities(timeout=DEADLINE)
        got_b = await b.probabilities(timeout=DEADLINE)
        assert [r.source for r in got_a + got_b] == ["model", "model"]
        assert pool.runs == 1 and vad is not None
        await clock.advance(1.0)  # nothing due: no more runs
        assert pool.runs == 1


async def test_silent_chunks_are_delivered_at_feed_without_a_tick(vad: SileroVad) -> None:
    clock = FakeClock()
    pool = VadPool(vad, clock)
    handle = pool.register("c", VadConfig(hangover_chunks=0))
    for f in frames(bytes(16000)):  # 1 s of digital silence
        handle.feed(f, clock.now())
    got = await handle.probabilities(timeout=0.0)
    assert len(got) == 31
    assert {r.source for r in got} == {"prefilter"}
    assert pool.runs == 0
    await pool.aclose()


async def test_callbacks_receive_results_in_order(vad: SileroVad) -> None:
    seen: list[VadResult] = []

    def on_result(r: VadResult) -> None:
        seen.append(r)
        if len(seen) == 3:
            raise RuntimeError("a consumer bug")  # logged; the pool carries on

    pool = VadPool(vad, FakeClock())
    handle = pool.register("c", on_result=on_result)
    for k, f in enumerate(frames(noise(0.32, 2000, 3))):
        handle.feed(f, k * 0.02)
        await pool.evaluate()
    await pool.aclose()
    assert len(seen) == 10
    assert [r.end for r in seen] == sorted(r.end for r in seen)
    assert handle.latest == seen[-1]
    assert handle.closed


async def test_stuck_model_times_out_and_chunks_fail() -> None:
    runner = BlockingRunner()
    pool = VadPool(runner, FakeClock(), run_timeout=0.05)
    handle = pool.register("c")
    handle.feed(noise(0.032, 2000, 4), 1.0)
    assert await pool.evaluate() == 0
    assert pool.failures == 1
    got = await handle.probabilities(timeout=0.0)
    assert [r.source for r in got] == ["failed"]
    runner.release.set()
    await pool.aclose(timeout=DEADLINE)


async def test_probabilities_wait_has_a_deadline() -> None:
    pool = VadPool(BlockingRunner(), FakeClock())
    handle = pool.register("c")
    assert await handle.probabilities(timeout=0.01) == []
    await pool.aclose()


async def test_close_is_clean_and_final(vad: SileroVad) -> None:
    clock = FakeClock()
    pool = VadPool(vad, clock)
    a, b = pool.register("a"), pool.register("b")
    assert pool.calls == 2
    a.close()
    assert pool.calls == 1 and a.closed
    with pytest.raises(ValueError):
        b.feed(AudioFrame.silence(320, 16000), 0.0)  # wrong rate for this VAD
    with pytest.raises(VadClosed):
        a.feed(AudioFrame.silence(), 0.0)
    with pytest.raises(VadClosed):
        await a.probabilities(timeout=DEADLINE)
    async with asyncio.timeout(DEADLINE):
        await pool.aclose()
    assert b.closed and pool.calls == 0
    with pytest.raises(VadClosed):
        pool.register("c")
    await pool.aclose()  # idempotent
    assert not any(t.name.startswith("vad") for t in threading.enumerate())


async def test_close_while_a_run_is_in_flight() -> None:
    runner = BlockingRunner()
    clock = FakeClock()
    pool = VadPool(runner, clock, run_timeout=DEADLINE)
    await pool.__aenter__()
    await asyncio.sleep(0)
    handle = pool.register("c")
    handle.feed(noise(0.032, 2000, 5), clock.now())
    await clock.advance(0.032)  # the tick hands the chunk to the (stuck) worker
    assert await asyncio.to_thread(runner.started.wait, DEADLINE)
    closing = asyncio.create_task(pool.aclose(timeout=DEADLINE))
    await asyncio.sleep(0)
    runner.release.set()  # the model returns at last; shutdown waits for it, bounded
    async with asyncio.timeout(DEADLINE):
        await closing
    assert handle.closed
    assert not any(t.name.startswith("vad") for t in threading.enumerate())
