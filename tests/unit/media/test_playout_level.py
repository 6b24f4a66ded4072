"""The playout level kept in O(1) per frame (measured when read) gives what the old per-pop numpy computation over
the whole window gave, on random streams of pushes, pops, holds and flushes."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.media.playout import PlayoutQueue

_FULL_SCALE_SQ = 32768.0 * 32768.0


class OldLevels:
    """The computation PlayoutQueue did before (a float32 dot per pop, sums over the window
    on every read), fed the same ticks."""

    def __init__(self, window: int) -> None:
        self.levels: deque[tuple[float, int]] = deque(maxlen=window)

    def idle(self) -> None:
        self.levels.append((0.0, FRAME_SAMPLES))

    def sent(self, frame: AudioFrame) -> None:
        n = frame.samples
        if n:
            x = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32)
            self.levels.append((float(np.dot(x, x)) / (n * _FULL_SCALE_SQ), n))

    @property
    def level_dbfs(self) -> float:
        energy = sum(ms * n for ms, n in self.levels)
        samples = sum(n for _, n in self.levels)
        return dbfs(energy / samples) if samples else -math.inf

    @property
    def peak_dbfs(self) -> float:
        return dbfs(max((ms for ms, _ in self.levels), default=0.0))


def dbfs(mean_square: float) -> float:
    return 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf


def same(fast: float, old: float) -> bool:
    if math.isinf(old) or math.isinf(fast):
        return fast == old
    return fast == pytest.approx(old, abs=1e-4)  # float32 rounding of the old dot product


frames = st.one_of(
    st.builds(
        lambda n, v: np.full(n, v, dtype="<i2"), st.integers(0, 200), st.integers(-32768, 32767)
    ),
    st.builds(
        lambda seed, amp, n: (
            (np.random.default_rng(seed).standard_normal(n) * amp).clip(-32768, 32767).astype("<i2")
        ),
        st.integers(0, 2**32 - 1),
        st.sampled_from([0.0, 1.0, 30.0, 3000.0, 30000.0]),
        st.sampled_from([0, 1, 80, FRAME_SAMPLES]),
    ),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), frames),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("hold"), st.booleans()),
        st.tuples(st.just("flush"), st.none()),
    ),
    max_size=120,
)


@settings(max_examples=800, deadline=None)  # ~200 per read interval, as before
@given(ops, st.sampled_from([0, 1, 3, 10]), st.sampled_from([1, 2, 7, 40]))
def test_the_fast_level_is_the_old_computation(
    script: list[tuple[str, object]], window: int, read_every: int
) -> None:
    """Read after every op, or now and then (the level is measured when read: ticks sent
    between reads, more of them than the window holds, must give the same level)."""
    q = PlayoutQueue(level_window=window)
    old = OldLevels(window)
    for i, (op, arg) in enumerate(script):
        match op:
            case "push":
                assert isinstance(arg, np.ndarray)
                q.push(AudioFrame(arg.tobytes()), 1)
            case "pop":
                item = q.pop()
                if item is None:
                    old.idle()
                else:
                    old.sent(item[0])
            case "hold":
                assert isinstance(arg, bool)
                q.hold(arg)
            case _:
                q.flush()
        if i % read_every == 0 or i == len(script) - 1:
            assert same(q.level_dbfs, old.level_dbfs), (q.level_dbfs, old.level_dbfs)
            assert same(q.peak_dbfs, old.peak_dbfs), (q.peak_dbfs, old.peak_dbfs)


def test_a_loud_frame_leaves_the_peak_after_exactly_one_window() -> None:
    q = PlayoutQueue(level_window=10)
    q.push(AudioFrame(np.full(FRAME_SAMPLES, 16384, dtype="<i2").tobytes()), 1)
    q.pop()
    for _ in range(9):
        q.pop()  # idle ticks
        assert q.peak_dbfs == pytest.approx(20 * math.log10(0.5))
    q.pop()
    assert q.peak_dbfs == -math.inf and q.level_dbfs == -math.inf
