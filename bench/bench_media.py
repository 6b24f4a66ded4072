"""Micro-benchmark of the per-frame media work: G.711 and the jitter buffer.

Run: .venv/bin/python bench/bench_media.py
Prints microseconds per event and the share of one core that 50 concurrent calls
(50 frames of 20 ms per second each) would spend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from callbridge.audio import g711
from callbridge.audio.plc import Concealer
from callbridge.rtp.jitter import JitterBuffer

FRAME = 160
FRAMES_PER_SECOND = 50
CALLS = 50


def per_call(fn: Callable[[], object], n: int) -> float:
    """Best of 3 runs, microseconds per call."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def jitter_push_pop(loss: float, n: int) -> float:
    """Microseconds for one push + one pop: 0-20 ms jitter, some loss, speech-like level."""
    rng = np.random.default_rng(1)
    pcm = [rng.normal(0, 3000, FRAME).astype("<i2").tobytes() for _ in range(50)]
    arrival = (np.arange(n) + 1) * 0.02 + 0.03 + rng.uniform(0.0, 0.02, n)
    lost = rng.random(n) < loss
    order = [int(k) for k in np.argsort(arrival, kind="stable") if not lost[k]]
    jb = JitterBuffer()
    i = 0
    t0 = time.perf_counter()
    for step in range(n):
        now = step * 0.02 + 0.0071
        while i < len(order) and arrival[order[i]] <= now:
            k = order[i]
            jb.push(0x1234, k & 0xFFFF, (k * FRAME) & 0xFFFFFFFF, pcm[k % 50], float(arrival[k]))
            i += 1
        jb.pop(now)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    pcm = rng.normal(0, 3000, FRAME).astype("<i2").tobytes()
    ulaw = g711.ulaw_encode(pcm)
    concealer = Concealer()
    for _ in range(5):
        concealer.good(pcm)

    def conceal_then_recover() -> None:
        concealer.conceal(FRAME)
        concealer.good(pcm)

    # (operation, microseconds per event, events per 20 ms frame of one call)
    rows = [
        ("ulaw_decode", per_call(lambda: g711.ulaw_decode(ulaw), 20000), 1.0),
        ("ulaw_encode", per_call(lambda: g711.ulaw_encode(pcm), 20000), 1.0),
        ("alaw_encode", per_call(lambda: g711.alaw_encode(pcm), 20000), 1.0),
        ("plc good (pass-through)", per_call(lambda: concealer.good(pcm), 20000), 1.0),
        ("plc conceal+recover @5% loss", per_call(conceal_then_recover, 2000), 0.05),
        ("jitter push+pop, clean", jitter_push_pop(0.0, 20000), 1.0),
        ("jitter push+pop, 5% loss", jitter_push_pop(0.05, 20000), 1.0),
    ]
    print(f"{'operation':<30}{'us/event':>10}{f'% of a core, {CALLS} calls':>26}")
    for name, us, rate in rows:
        share = us * rate * FRAMES_PER_SECOND * CALLS / 1e6 * 100
        print(f"{name:<30}{us:>10.1f}{share:>25.2f}%")


if __name__ == "__main__":
    main()
