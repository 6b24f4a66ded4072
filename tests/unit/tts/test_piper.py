"""piper with the bundled en_US-joe-medium voice."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from piper import PiperVoice

from callbridge.stt.pocketsphinx import PocketsphinxRecognizer
from callbridge.tts.base import Synthesizer
from callbridge.tts.piper import PiperSynthesizer, joe_voice_paths


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    # Deterministic: piper's default noise makes every run different, and first-pass
    # pocketsphinx on a short phrase is sensitive to that.
    return PiperSynthesizer(deterministic=True)


def test_voice_comes_from_the_joe_package() -> None:
    model, config = joe_voice_paths()
    assert model.name == "en_US-joe-medium.onnx"
    assert model.stat().st_size > 50_000_000  # the real model, not a placeholder
    assert config.exists()


def test_is_a_synthesizer_at_8khz(piper: PiperSynthesizer) -> None:
    s: Synthesizer = piper
    assert s.sample_rate == 8000
    assert piper.voice_rate == 22050


def test_speech_is_8khz_pcm16(piper: PiperSynthesizer) -> None:
    [chunk] = list(piper.synthesize("What time is it?"))
    x = np.frombuffer(chunk, dtype="<i2")
    assert 0.6 < len(x) / 8000 < 2.0
    assert np.abs(x).max() > 10000  # piper normalises each sentence to full scale


def test_what_time_is_it_round_trips_through_pocketsphinx(piper: PiperSynthesizer) -> None:
    pcm = b"".join(piper.synthesize("what time is it"))
    stt = PocketsphinxRecognizer()
    try:
        stt.start()
        for k in range(0, len(pcm), 320):
            stt.feed(pcm[k : k + 320])
        text = stt.finish().text
    finally:
        stt.close()
    assert "time" in text.split(), text


def test_one_chunk_per_clause_each_synthesised_on_demand(piper: PiperSynthesizer) -> None:
    voice = piper._voice
    calls: list[str] = []
    original = voice.synthesize

    def spy(text: str, *args: Any, **kwargs: Any) -> Iterable[Any]:
        calls.append(text)
        return original(text, *args, **kwargs)

    voice.synthesize = spy  # type: ignore[method-assign]
    try:
        chunks = piper.synthesize("Hello. Thanks for calling; how can I help?")
        first = next(chunks)
        assert calls == ["Hello."]  # the first audio does not wait for the rest
        rest = list(chunks)
    finally:
        del voice.synthesize
    assert calls == ["Hello.", "Thanks for calling;", "how can I help?"]
    assert len(rest) == 2
    assert all(len(c) > 1600 for c in (first, *rest))


def test_deterministic_without_noise(piper: PiperSynthesizer) -> None:
    assert list(piper.synthesize("Good morning.")) == list(piper.synthesize("Good morning."))


def test_nothing_to_say(piper: PiperSynthesizer) -> None:
    assert list(piper.synthesize("")) == []
    assert list(piper.synthesize(" \n ")) == []


def test_brackets_are_text_not_phonemes(piper: PiperSynthesizer) -> None:
    assert list(piper.synthesize("[[h@'loU]] there"))


def test_accepts_a_loaded_voice(piper: PiperSynthesizer) -> None:
    voice: PiperVoice = piper._voice
    other = PiperSynthesizer(voice, length_scale=1.5, warm_up=False)
    slow = b"".join(other.synthesize("Good morning."))
    normal = b"".join(piper.synthesize("Good morning."))
    assert len(slow) > 1.2 * len(normal)
    other.close()
