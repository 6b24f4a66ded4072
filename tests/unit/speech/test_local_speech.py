"""The offline speech adapters, for real: piper and espeak-ng speak, pocketsphinx listens."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.audio.resample import Resampler, resample
from callbridge.stt.pocketsphinx import PocketsphinxRecognizer
from callbridge.tts.base import split_clauses
from callbridge.tts.espeak import EspeakSynthesizer
from callbridge.tts.factory import default_synthesizer
from callbridge.tts.piper import PiperSynthesizer


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer(deterministic=True)


@pytest.fixture(scope="module")
def stt() -> PocketsphinxRecognizer:
    return PocketsphinxRecognizer()


def transcribe(stt: PocketsphinxRecognizer, pcm: bytes) -> tuple[str, list[str]]:
    stt.start()
    partials = []
    for i in range(0, len(pcm), 1600):  # 100 ms at a time, as the agent feeds it
        partials += [t.text for t in stt.feed(pcm[i : i + 1600])]
    final = stt.finish()
    assert final.final
    return final.text, partials


def test_deterministic_piper_repeats_itself(piper: PiperSynthesizer) -> None:
    assert b"".join(piper.synthesize("One two.")) == b"".join(piper.synthesize("One two."))


def test_piper_speaks_8khz_and_pocketsphinx_hears_it(
    piper: PiperSynthesizer, stt: PocketsphinxRecognizer
) -> None:
    pcm = b"".join(piper.synthesize("Hello. Can you tell me what time it is?"))
    assert 1.5 < len(pcm) / 16000 < 4.0  # seconds of 8 kHz PCM16
    text, partials = transcribe(stt, pcm)
    assert "time" in text.split(), text
    assert partials, "no partial hypothesis before the final one"


def test_espeak_fallback_speaks(stt: PocketsphinxRecognizer) -> None:
    pcm = b"".join(EspeakSynthesizer().synthesize("I want to leave a message."))
    text, _ = transcribe(stt, pcm)
    assert {"want", "leave"} & set(text.split()), text


def test_silence_gives_an_empty_final(stt: PocketsphinxRecognizer) -> None:
    text, _ = transcribe(stt, bytes(16000))
    assert text == ""


def test_factory_prefers_piper_and_honours_espeak() -> None:
    assert type(default_synthesizer("espeak")).__name__ == "EspeakSynthesizer"


def test_empty_text_synthesises_nothing(piper: PiperSynthesizer) -> None:
    assert list(piper.synthesize("  ")) == []


def test_clauses() -> None:
    assert split_clauses("It's 3:05 PM. Anything else? Bye!") == [
        "It's 3:05 PM.",
        "Anything else?",
        "Bye!",
    ]
    assert split_clauses("Dr. Smith is in. Call 3.5 times") == [
        "Dr. Smith is in.",
        "Call 3.5 times",
    ]
    assert split_clauses("") == []


def test_streaming_resampler_matches_one_shot_and_keeps_frequency() -> None:
    t = np.arange(8000) / 8000
    x = (8000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
    r = Resampler(8000, 16000)
    streamed = b"".join(r.feed(x[i : i + 320]) for i in range(0, len(x), 320)) + r.finish()
    whole = resample(x, 8000, 16000)
    assert abs(len(streamed) - len(whole)) <= 4
    y = np.frombuffer(streamed, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(y[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 1000) < 5
