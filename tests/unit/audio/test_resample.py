"""Low-delay streaming resampler and one-shot resampling."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.audio.resample import LOW_DELAY, Resampler, resample

RATE_PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (22050, 8000),
    (8000, 22050),
    (48000, 8000),
    (8000, 48000),
]


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 10000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def stream(r: Resampler, pcm: bytes, chunk_ms: int = 20) -> tuple[bytes, list[float]]:
    """Feed `pcm` in chunk_ms pieces; return all output and the delay after each piece."""
    n = 2 * r.in_rate * chunk_ms // 1000
    out, delays = [], []
    for k in range(0, len(pcm), n):
        out.append(r.feed(pcm[k : k + n]))
        delays.append(r.delay)
    out.append(r.finish())
    return b"".join(out), delays


def dominant_frequency(pcm: bytes, rate: int) -> float:
    x = samples(pcm)
    x = x[len(x) // 4 : 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def level_db(pcm: bytes, ref: bytes) -> float:
    x, r = samples(pcm), samples(ref)
    return float(20 * np.log10(np.std(x[len(x) // 4 : -len(x) // 4]) / np.std(r)))


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_a_1khz_tone_keeps_its_frequency_and_level(in_rate: int, out_rate: int) -> None:
    x = tone(1000, in_rate)
    y, _ = stream(Resampler(in_rate, out_rate), x)
    assert abs(dominant_frequency(y, out_rate) - 1000) < 2
    assert abs(level_db(y, x)) < 0.2
    assert abs(len(y) // 2 - len(x) // 2 * out_rate / in_rate) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_delay_stays_below_10_ms(in_rate: int, out_rate: int) -> None:
    r = Resampler(in_rate, out_rate)
    _, delays = stream(r, tone(440, in_rate, 0.5))
    assert max(delays) < 0.010
    assert max(delays) == pytest.approx(0.002, abs=0.0005)  # the FIR's 2 ms (+ cubic's few samples)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_streaming_output_is_time_aligned_with_soxr_hq_one_shot(
    in_rate: int, out_rate: int
) -> None:
    # Speech-band content: the low-delay chain and soxr HQ differ only near 4 kHz.
    x = samples(tone(300, in_rate)) + samples(tone(1100, in_rate)) + samples(tone(2500, in_rate))
    pcm = (x / 3).astype("<i2").tobytes()
    y, _ = stream(Resampler(in_rate, out_rate), pcm)
    ref = samples(resample(pcm, in_rate, out_rate, "HQ"))
    got = samples(y)
    assert len(got) == len(ref)
    core = slice(200, len(ref) - 200)
    err = got[core] - ref[core]
    assert 20 * np.log10(np.std(err) / np.std(ref[core])) < -35
    # Aligned: shifting by one output sample in either direction only makes it worse.
    for shift in (-1, 1):
        shifted = got[200 + shift : len(ref) - 200 + shift] - ref[core]
        assert np.std(shifted) > np.std(err)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_streaming_equals_one_shot_low_delay(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(7)
    pcm = (rng.normal(0, 3000, in_rate // 2)).astype("<i2").tobytes()
    y, _ = stream(Resampler(in_rate, out_rate), pcm)
    assert samples(y) == pytest.approx(samples(resample(pcm, in_rate, out_rate, LOW_DELAY)), abs=1)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1600), max_size=12))
def test_output_does_not_depend_on_how_the_input_is_cut(cuts: list[int]) -> None:
    rng = np.random.default_rng(3)
    pcm = rng.normal(0, 3000, 1600).astype("<i2").tobytes()
    for in_rate, out_rate in ((8000, 16000), (22050, 8000)):
        whole = resample(pcm, in_rate, out_rate, LOW_DELAY)
        r = Resampler(in_rate, out_rate)
        bounds = [0, *sorted(2 * c for c in cuts), len(pcm)]
        pieces = [r.feed(pcm[a:b]) for a, b in itertools.pairwise(bounds)]
        got = samples(b"".join(pieces) + r.finish())
        assert got == pytest.approx(samples(whole), abs=1)  # float summation order only


def test_downsampling_rejects_aliases() -> None:
    # 6 kHz at 22.05 kHz would fold to 2 kHz at 8 kHz; soxr's QQ alone passes it at 0 dB.
    x = tone(6000, 22050)
    y, _ = stream(Resampler(22050, 8000), x)
    assert level_db(y, x) < -60


def test_upsampling_rejects_images() -> None:
    x = tone(3000, 8000)
    y = samples(stream(Resampler(8000, 16000), x)[0])
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    image = spectrum[np.abs(freqs - 5000) < 50].max()
    wanted = spectrum[np.abs(freqs - 3000) < 50].max()
    assert 20 * np.log10(image / wanted) < -60


def test_finish_starts_a_fresh_stream() -> None:
    x = tone(700, 8000, 0.2)
    r = Resampler(8000, 16000)
    first, _ = stream(r, x)
    second, _ = stream(r, x)
    assert first == second
    assert r.delay == 0.0


def test_reset_drops_withheld_audio() -> None:
    r = Resampler(8000, 16000)
    r.feed(tone(700, 8000, 0.1))
    r.reset()
    assert r.delay == 0.0
    assert r.finish() == resample(b"", 8000, 16000, LOW_DELAY)


@pytest.mark.parametrize("quality", ["LQ", "HQ"])
def test_soxr_recipes_stream_too(quality: str) -> None:
    x = tone(1000, 8000)
    r = Resampler(8000, 16000, quality)  # type: ignore[arg-type]
    y, delays = stream(r, x)
    assert abs(dominant_frequency(y, 16000) - 1000) < 2
    assert max(delays) > 0.02  # why they are not the default: block-buffered


def test_equal_rates_pass_through() -> None:
    x = tone(1000, 8000, 0.1)
    r = Resampler(8000, 8000)
    assert r.feed(x) == x
    assert r.finish() == b""
    assert resample(x, 8000, 8000) == x


def test_one_shot_default_is_soxr_hq() -> None:
    x = tone(1000, 22050, 0.5)
    y = resample(x, 22050, 8000)
    assert len(y) // 2 == 4000
    assert abs(dominant_frequency(y, 8000) - 1000) < 2


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        Resampler(8000, 16000).feed(b"\x00")
    with pytest.raises(ValueError):
        resample(b"\x00", 8000, 16000)
    with pytest.raises(ValueError):
        Resampler(0, 8000)
    with pytest.raises(ValueError):
        Resampler(8000, 16000, "best")  # type: ignore[arg-type]
    assert resample(b"", 8000, 16000) == b""
