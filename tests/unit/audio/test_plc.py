"""Concealer: pitch-repetition PLC after ITU-T G.711 Appendix I."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from callbridge.audio.plc import Concealer

RATE = 8000
FRAME = 160


def sine(freq: float, samples: int, amp: float = 8000.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(samples) / RATE
    return np.rint(amp * np.sin(2 * np.pi * freq * t + phase)).astype("<i2")


def vowel(samples: int, f0: float = 125.0) -> np.ndarray:
    """A crude voiced sound: harmonics of f0 with falling amplitude."""
    t = np.arange(samples) / RATE
    x = sum(np.sin(2 * np.pi * h * f0 * t + h) / h for h in range(1, 8))
    return np.rint(5000 * x).astype("<i2")


def arr(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def feed(c: Concealer, x: np.ndarray, frames: int) -> None:
    for i in range(frames):
        out = c.good(x[i * FRAME : (i + 1) * FRAME].tobytes())
        assert out == x[i * FRAME : (i + 1) * FRAME].tobytes()  # pass-through


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def max_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x.astype(np.float64)))))


@pytest.mark.parametrize("freq", [200.0, 150.0, 100.0])
def test_lost_frame_continues_the_waveform(freq: float) -> None:
    x = sine(freq, 20 * FRAME)
    c = Concealer()
    feed(c, x, 10)
    y = arr(c.conceal(FRAME))
    true = x[10 * FRAME : 11 * FRAME].astype(np.float64)
    assert len(y) == FRAME
    assert corr(y, true) > 0.9
    assert np.sqrt(np.mean(y**2)) > 0.5 * np.sqrt(np.mean(true**2))  # not silence
    # First 10 ms at full level, then attenuating.
    assert np.max(np.abs(y[:80])) == pytest.approx(8000, rel=0.05)
    assert np.max(np.abs(y[120:])) < np.max(np.abs(y[:80]))


def test_voiced_signal_pitch_is_found_and_repeated() -> None:
    x = vowel(20 * FRAME)  # period 64 samples
    c = Concealer()
    feed(c, x, 10)
    y = arr(c.conceal(FRAME))
    assert c._pitch == 64  # 125 Hz
    assert corr(y[:80], x[10 * FRAME : 10 * FRAME + 80].astype(np.float64)) > 0.95


def test_concealment_in_small_pieces_equals_one_call() -> None:
    x = vowel(20 * FRAME)
    a, b = Concealer(), Concealer()
    feed(a, x, 10)
    feed(b, x, 10)
    whole = a.conceal(3 * FRAME)
    pieces = b"".join(b.conceal(n) for n in (7, 73, 80, 1, 159, 160))
    assert pieces == whole


def test_long_loss_fades_to_silence_by_60ms() -> None:
    x = vowel(20 * FRAME)
    c = Concealer()
    feed(c, x, 10)
    y = arr(c.conceal(5 * FRAME))  # 100 ms
    level = [np.sqrt(np.mean(y[i : i + 80] ** 2)) for i in range(0, len(y), 80)]
    # 10 ms blocks: full, then 20 % less per 10 ms, zero from 60 ms on.
    assert level[0] > 1000
    assert all(a >= b for a, b in itertools.pairwise(level[1:7]))
    assert level[5] < 0.25 * level[0]
    assert all(v == 0 for v in level[6:])
    assert c.concealing
    assert c.erased_samples == 5 * FRAME


def test_no_click_at_start_of_concealment() -> None:
    x = vowel(20 * FRAME)
    c = Concealer()
    feed(c, x, 10)
    y = arr(c.conceal(FRAME))
    joined = np.concatenate((x[9 * FRAME : 10 * FRAME].astype(np.float64), y))
    assert max_step(joined) <= 1.05 * max_step(x)


@pytest.mark.parametrize("freq", [150.0, 111.0, 70.0])
def test_replayed_loop_is_seamless(freq: float) -> None:
    # Periods that are not whole samples: every wrap of the replayed period would step.
    x = sine(freq, 20 * FRAME)
    c = Concealer()
    feed(c, x, 10)
    y = arr(c.conceal(3 * FRAME))
    joined = np.concatenate((x[9 * FRAME : 10 * FRAME].astype(np.float64), y))
    assert max_step(joined) <= 1.1 * max_step(x)


@pytest.mark.parametrize("lost_frames", [1, 2, 3, 6])
def test_no_discontinuity_at_recovery(lost_frames: int) -> None:
    # 150 Hz is not a whole number of samples per period: the replica drifts out of phase,
    # and after 60 ms it is silent; recovery happens at a peak, so without the
    # overlap-add the boundary would step.
    x = sine(150.0, 30 * FRAME, phase=np.pi / 2)
    c = Concealer()
    feed(c, x, 10)
    concealed = arr(c.conceal(lost_frames * FRAME))
    k = 10 + lost_frames
    raw = x[k * FRAME : (k + 1) * FRAME]
    rec = arr(c.good(raw.tobytes()))
    assert not c.concealing
    joined = np.concatenate((concealed, rec))
    natural = max_step(x)
    assert max_step(joined[-FRAME - 20 :]) <= 1.3 * natural
    # Without cross-fade the boundary would jump: make sure the test is sensitive to it.
    assert max_step(np.concatenate((concealed, raw))[-FRAME - 20 :]) > 1.3 * natural
    # The cross-fade is short: the rest of the frame is the received audio untouched.
    assert np.array_equal(rec[80:], raw[80:].astype(np.float64))
    # And the next frame passes through unchanged.
    nxt = x[(k + 1) * FRAME : (k + 2) * FRAME].tobytes()
    assert c.good(nxt) == nxt


def test_conceal_before_any_audio_is_silence() -> None:
    c = Concealer()
    assert c.conceal(FRAME) == bytes(2 * FRAME)
    first = vowel(FRAME)
    out = arr(c.good(first.tobytes()))
    assert abs(out[0]) < abs(float(first[0])) + 1  # faded in from silence
    assert np.array_equal(out[80:], first[80:].astype(np.float64))


def test_edge_cases() -> None:
    c = Concealer()
    assert c.conceal(0) == b""
    assert c.good(b"") == b""
    with pytest.raises(ValueError):
        c.good(b"\x00")
    with pytest.raises(ValueError):
        Concealer(0)
    feed(c, vowel(10 * FRAME), 10)
    c.conceal(FRAME)
    c.reset()
    assert not c.concealing
    assert c.conceal(FRAME) == bytes(2 * FRAME)


def test_other_sample_rate() -> None:
    rate = 16000
    t = np.arange(20 * 320) / rate
    x = np.rint(8000 * np.sin(2 * np.pi * 200 * t)).astype("<i2")
    c = Concealer(rate)
    for i in range(10):
        c.good(x[i * 320 : (i + 1) * 320].tobytes())
    y = arr(c.conceal(320))
    assert corr(y, x[3200:3520].astype(np.float64)) > 0.9
