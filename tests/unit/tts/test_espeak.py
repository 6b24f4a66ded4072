"""espeak-ng fallback synthesizer, its WAV parsing, and the TTS factory's choice."""

from __future__ import annotations

import difflib
import io
import logging
import stat
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.stt.pocketsphinx import PocketsphinxRecognizer
from callbridge.tts import factory
from callbridge.tts.base import Synthesizer
from callbridge.tts.espeak import EspeakError, EspeakSynthesizer, parse_wav


@pytest.fixture(scope="module")
def espeak() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def hits(expected: str, got: str) -> int:
    m = difflib.SequenceMatcher(a=expected.split(), b=got.split(), autojunk=False)
    return sum(block.size for block in m.get_matching_blocks())


def test_is_a_synthesizer_at_8khz(espeak: EspeakSynthesizer) -> None:
    s: Synthesizer = espeak
    assert s.sample_rate == 8000


def test_one_chunk_per_clause(espeak: EspeakSynthesizer) -> None:
    chunks = list(espeak.synthesize("Hello there. How are you today?"))
    assert len(chunks) == 2
    for c in chunks:
        assert len(c) % 2 == 0
        x = np.frombuffer(c, dtype="<i2")
        assert 0.3 < len(x) / 8000 < 3.0
        assert np.abs(x).max() > 3000


def test_nothing_to_say(espeak: EspeakSynthesizer) -> None:
    assert list(espeak.synthesize("")) == []
    assert list(espeak.synthesize("  \n ")) == []


def test_text_is_never_an_option_or_phonemes(espeak: EspeakSynthesizer) -> None:
    assert list(espeak.synthesize("-v xx --help"))
    assert list(espeak.synthesize("[[h@'loU]] there"))


def test_digits_round_trip_through_pocketsphinx(espeak: EspeakSynthesizer) -> None:
    pcm = b"".join(espeak.synthesize("One two three four five."))
    stt = PocketsphinxRecognizer()
    try:
        stt.start()
        for k in range(0, len(pcm), 320):
            stt.feed(pcm[k : k + 320])
        text = stt.finish().text
    finally:
        stt.close()
    assert hits("one two three four five", text) >= 3, text


def test_unknown_voice_fails_at_construction() -> None:
    # (An unknown *variant*, "en-us+nosuch", is silently ignored by espeak-ng itself.)
    with pytest.raises(EspeakError, match="does not exist"):
        EspeakSynthesizer(voice="nosuch")


def test_missing_program() -> None:
    with pytest.raises(EspeakError, match="not installed"):
        EspeakSynthesizer(executable="no-such-espeak-ng")


def test_a_hung_synthesis_times_out(tmp_path: Path) -> None:
    hang = tmp_path / "espeak-ng"
    hang.write_text("#!/bin/sh\nexec cat /dev/zero > /dev/null\n")
    hang.chmod(hang.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(EspeakError, match="longer than"):
        EspeakSynthesizer(executable=str(hang), timeout=0.2)


def _wav(pcm: bytes, rate: int = 22050, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def test_parse_wav_with_streaming_placeholder_sizes() -> None:
    pcm = struct.pack("<4h", 1, -2, 300, -32768)
    data = bytearray(_wav(pcm))
    struct.pack_into("<I", data, 4, 0x7FFFF024)  # what espeak-ng writes to a pipe
    struct.pack_into("<I", data, 40, 0x7FFFF000)
    assert parse_wav(bytes(data)) == (pcm, 22050)


def test_parse_wav_skips_other_chunks_and_stops_at_the_data_size() -> None:
    pcm = struct.pack("<2h", 5, 6)
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"LIST"
        + struct.pack("<I", 3)
        + b"abc\x00"
        + b"data"
        + struct.pack("<I", 4)
        + pcm
        + b"junk"
    )
    assert parse_wav(b"RIFF" + struct.pack("<I", len(body)) + body) == (pcm, 16000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a wav file at all",
        _wav(bytes(8), channels=2),
        _wav(bytes(8), width=1),
        _wav(b"")[:36],  # no data chunk
    ],
)
def test_parse_wav_rejects(data: bytes) -> None:
    with pytest.raises(EspeakError):
        parse_wav(data)


def test_factory_falls_back_to_espeak_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import callbridge.tts.piper as piper_module

    def broken(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("en_US-joe-medium.onnx")

    monkeypatch.setattr(piper_module, "PiperSynthesizer", broken)
    with caplog.at_level(logging.INFO, logger="callbridge.tts"):
        synth = factory.default_synthesizer()
    assert isinstance(synth, EspeakSynthesizer)
    [record] = [r for r in caplog.records if r.getMessage() == "tts.selected"]
    assert record.levelno == logging.WARNING
    fields = record.__dict__["fields"]
    assert fields["engine"] == "espeak-ng"
    assert "en_US-joe-medium.onnx" in fields["reason"]


def test_factory_prefers_piper(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import callbridge.tts.piper as piper_module

    class FakePiper:
        sample_rate = 8000

    monkeypatch.setattr(piper_module, "PiperSynthesizer", FakePiper)
    with caplog.at_level(logging.INFO, logger="callbridge.tts"):
        synth = factory.default_synthesizer()
    assert isinstance(synth, FakePiper)
    [record] = [r for r in caplog.records if r.getMessage() == "tts.selected"]
    assert record.__dict__["fields"]["engine"] == "piper"


def test_factory_can_be_told_to_use_espeak() -> None:
    assert isinstance(factory.default_synthesizer(prefer="espeak"), EspeakSynthesizer)
    with pytest.raises(ValueError):
        factory.default_synthesizer(prefer="festival")
