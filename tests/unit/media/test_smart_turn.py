"""Smart Turn v3: our numpy features and inference against pipecat's own implementation (the
reference that ships the model), on the same audio; and the audio preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callbridge.audio.resample import resample
from callbridge.audio.wav import read_wav
from callbridge.media.smart_turn import (
    MODEL_RATE,
    SmartTurn,
    log_mel_features,
    model_path,
    prepare_audio,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "audio"


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def speech_16k() -> bytes:
    pcm, rate = read_wav(FIXTURES / "caller_stop.wav")
    return resample(pcm, rate, MODEL_RATE) + bytes(2 * MODEL_RATE // 5)  # + 200 ms pause


@pytest.mark.parametrize("seconds", [0.5, 3.0, 8.0, 9.5])
def test_features_match_pipecats(seconds: float) -> None:
    from pipecat.audio.turn.smart_turn._whisper_features import (
        compute_whisper_log_mel_features,
    )

    rng = np.random.default_rng(int(seconds * 10))
    audio = (rng.standard_normal(int(seconds * MODEL_RATE)) * 0.1).astype(np.float32)
    ours = log_mel_features(audio)
    assert ours.shape == (80, 800) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, compute_whisper_log_mel_features(audio), atol=1e-6)


def test_features_of_speech_match_pipecats() -> None:
    from pipecat.audio.turn.smart_turn._whisper_features import (
        compute_whisper_log_mel_features,
    )

    x = prepare_audio(speech_16k(), MODEL_RATE)
    np.testing.assert_allclose(log_mel_features(x), compute_whisper_log_mel_features(x), atol=1e-6)


def test_probability_matches_pipecats_analyzer(model: SmartTurn) -> None:
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    reference = LocalSmartTurnAnalyzerV3(smart_turn_model_path=str(model_path()))
    pcm = speech_16k()
    expected = reference._predict_endpoint(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768)
    assert model.predict(pcm, MODEL_RATE) == pytest.approx(expected["probability"], abs=1e-5)


def test_known_outputs_on_the_fixture(model: SmartTurn) -> None:
    """Golden values (8 kHz fixture, as a call delivers it): a finished sentence is complete;
    its first 70 % less so."""
    pcm, rate = read_wav(FIXTURES / "caller_stop.wav")
    pause = bytes(2 * rate // 5)
    assert model.predict(pcm + pause, rate) == pytest.approx(0.984, abs=0.01)
    cut = len(pcm) * 7 // 10 // 2 * 2
    assert model.predict(pcm[:cut] + pause, rate) == pytest.approx(0.779, abs=0.02)


def test_prepare_audio_keeps_the_last_8_s_and_pads_in_front() -> None:
    short = prepare_audio(np.full(8000, 1000, "<i2").tobytes(), 8000)
    assert short.shape == (8 * MODEL_RATE,)
    assert not short[: 7 * MODEL_RATE - 100].any() and short[-MODEL_RATE + 100 :].all()
    ramp = np.arange(10 * MODEL_RATE, dtype=np.int64) % 30000
    long = prepare_audio(ramp.astype("<i2").tobytes(), MODEL_RATE)
    np.testing.assert_array_equal(long, ramp[-8 * MODEL_RATE :].astype(np.float32) / 32768)


def test_model_ships_in_a_wheel() -> None:
    path = model_path()
    assert path.name.startswith("smart-turn-v3") and path.stat().st_size > 5_000_000


def test_not_a_smart_turn_model_is_refused(tmp_path: Path) -> None:
    from callbridge.media.vad import silero_model_bytes

    silero = tmp_path / "silero.onnx"
    silero.write_bytes(silero_model_bytes())
    with pytest.raises(ValueError, match="not a Smart Turn"):
        SmartTurn(silero)
