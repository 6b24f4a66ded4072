"""Playout queue with position: what pop() handed out is what played() reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio.levels import rms_dbfs
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.media.playout import LEVEL_WINDOW_FRAMES, PlayoutQueue


def sine_frame(amplitude: float, samples: int = FRAME_SAMPLES, hz: float = 400.0) -> AudioFrame:
    t = np.arange(samples) / 8000
    return AudioFrame((amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())


def test_played_counts_exactly_what_pop_handed_out() -> None:
    q = PlayoutQueue()
    for i in range(5):
        q.push(AudioFrame.silence(), "a")
        q.push(AudioFrame.silence(80 + i), "b")
    sent: dict[str, int] = {"a": 0, "b": 0}
    for _ in range(7):
        item = q.pop()
        assert item is not None
        frame, utt = item
        assert isinstance(utt, str)
        sent[utt] += frame.samples
    assert q.played("a") == sent["a"] == 4 * FRAME_SAMPLES
    assert q.played("b") == sent["b"] == 80 + 81 + 82
    assert q.queued_samples == FRAME_SAMPLES + 83 + 84
    assert len(q) == 3


def test_flush_drops_the_rest_now() -> None:
    q = PlayoutQueue()
    for _ in range(10):
        q.push(AudioFrame.silence(), 1)
    q.push(AudioFrame.silence(), 2)
    q.pop()
    q.pop()
    assert q.flush() == 9 * FRAME_SAMPLES
    assert q.played(1) == 2 * FRAME_SAMPLES
    assert q.dropped(1) == 8 * FRAME_SAMPLES
    assert q.dropped(2) == FRAME_SAMPLES
    assert q.played(2) == 0
    assert q.queued_samples == 0 and len(q) == 0
    assert q.pop() is None
    assert q.flush() == 0
    # new audio after the flush plays normally
    q.push(AudioFrame.silence(), 3)
    assert q.pop() == (AudioFrame.silence(), 3)
    assert q.played(3) == FRAME_SAMPLES


def playing(q: PlayoutQueue) -> bool:
    return q.playing  # calls, so mypy does not narrow the properties across pops


def current(q: PlayoutQueue) -> object:
    return q.current


def test_playing_tracks_queue_and_last_tick() -> None:
    q = PlayoutQueue()
    assert not playing(q) and current(q) is None
    q.push(AudioFrame.silence(), "x")
    assert playing(q)
    q.pop()
    assert playing(q) and current(q) == "x"  # just sent: still on its way to the caller
    q.pop()
    assert not playing(q) and current(q) is None
    q.push(AudioFrame.silence(), "y")
    q.flush()
    assert not playing(q)


def test_unknown_utterance_and_forget() -> None:
    q = PlayoutQueue()
    assert q.played("nope") == 0 and q.dropped("nope") == 0
    q.push(AudioFrame.silence(), "u")
    q.pop()
    q.forget("u")
    assert q.played("u") == 0


def test_levels_of_what_was_sent() -> None:
    q = PlayoutQueue()
    assert q.level_dbfs == -math.inf and q.peak_dbfs == -math.inf
    loud, quiet = sine_frame(16000), sine_frame(1600)
    for _ in range(LEVEL_WINDOW_FRAMES):
        q.push(loud, 1)
    # queued audio does not count: nothing was sent yet
    assert q.level_dbfs == -math.inf
    for _ in range(LEVEL_WINDOW_FRAMES):
        q.pop()
    assert q.level_dbfs == pytest.approx(rms_dbfs(loud.pcm), abs=0.01)
    assert q.peak_dbfs == pytest.approx(rms_dbfs(loud.pcm), abs=0.01)
    # half the window quiet: RMS is the energy average, peak stays at the loud frames
    for _ in range(LEVEL_WINDOW_FRAMES // 2):
        q.push(quiet, 2)
        q.pop()
    mixed = 10 * math.log10(
        (10 ** (rms_dbfs(loud.pcm) / 10) + 10 ** (rms_dbfs(quiet.pcm) / 10)) / 2
    )
    assert q.level_dbfs == pytest.approx(mixed, abs=0.01)
    assert q.peak_dbfs == pytest.approx(rms_dbfs(loud.pcm), abs=0.01)
    # idle ticks send silence: after a whole window of them the level is gone
    for _ in range(LEVEL_WINDOW_FRAMES // 2):
        q.pop()
    assert q.peak_dbfs == pytest.approx(rms_dbfs(quiet.pcm), abs=0.01)
    assert q.level_dbfs == pytest.approx(rms_dbfs(quiet.pcm) - 3.01, abs=0.01)
    for _ in range(LEVEL_WINDOW_FRAMES // 2):
        q.pop()
    assert q.level_dbfs == -math.inf and q.peak_dbfs == -math.inf


def test_full_scale_level() -> None:
    q = PlayoutQueue()
    q.push(AudioFrame(np.full(FRAME_SAMPLES, -32768, dtype="<i2").tobytes()), 0)
    q.pop()
    assert q.peak_dbfs == pytest.approx(0.0)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.integers(0, 3), st.integers(1, 200)),
            st.tuples(st.just("pop"), st.just(0), st.just(0)),
            st.tuples(st.just("flush"), st.just(0), st.just(0)),
        ),
        max_size=200,
    )
)
def test_every_pushed_sample_is_played_dropped_or_queued(ops: list[tuple[str, int, int]]) -> None:
    q = PlayoutQueue()
    pushed = [0] * 4
    handed = [0] * 4
    flushed = 0
    for op, utt, n in ops:
        match op:
            case "push":
                q.push(AudioFrame(bytes(2 * n)), utt)
                pushed[utt] += n
            case "pop":
                item = q.pop()
                if item is not None:
                    frame, u = item
                    assert isinstance(u, int)
                    handed[u] += frame.samples
            case _:
                flushed += q.flush()
    for u in range(4):
        assert q.played(u) == handed[u]
    assert sum(q.dropped(u) for u in range(4)) == flushed
    assert sum(pushed) == sum(handed) + flushed + q.queued_samples


def test_hold_withholds_frames_and_keeps_positions() -> None:
    q = PlayoutQueue()
    for _ in range(3):
        q.push(sine_frame(8000.0), 1)
    assert q.pop() is not None
    q.hold(True)
    assert q.pop() is None and q.pop() is None  # nothing sent while held
    assert q.played(1) == FRAME_SAMPLES  # held ticks are not "heard"
    assert q.playing  # still has audio to say: barge-in detection stays armed
    q.hold(False)
    assert q.pop() is not None
    assert q.played(1) == 2 * FRAME_SAMPLES


def test_flush_releases_a_hold() -> None:
    q = PlayoutQueue()
    q.push(sine_frame(8000.0), 1)
    q.hold(True)
    assert q.flush() == FRAME_SAMPLES
    assert not q.held
    q.push(sine_frame(8000.0), 2)
    assert q.pop() is not None  # the next utterance plays
