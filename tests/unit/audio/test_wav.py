"""WAV read/write (stdlib wave) and level measurements."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio.levels import peak, rms, rms_dbfs
from callbridge.audio.wav import read_wav, write_wav


def test_round_trip(tmp_path: Path) -> None:
    pcm = np.arange(-800, 800, dtype="<i2").tobytes()
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 8000)
    assert read_wav(path) == (pcm, 8000)
    assert read_wav(str(path)) == (pcm, 8000)


def test_written_file_is_a_standard_riff_wav(tmp_path: Path) -> None:
    pcm = struct.pack("<3h", 1, -2, 32767)
    path = tmp_path / "b.wav"
    write_wav(path, pcm, 16000)
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", raw, 20)
    assert (fmt, channels, rate, bits) == (1, 1, 16000, 16)
    assert raw.endswith(pcm)


def _write_raw(path: Path, channels: int, width: int, frames: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(frames)


@pytest.mark.parametrize(("channels", "width"), [(2, 2), (1, 1), (1, 3), (1, 4)])
def test_other_formats_rejected_clearly(tmp_path: Path, channels: int, width: int) -> None:
    path = tmp_path / "c.wav"
    _write_raw(path, channels, width, bytes(channels * width * 10))
    with pytest.raises(ValueError, match="expected 16-bit PCM mono"):
        read_wav(path)


def test_non_wav_rejected(tmp_path: Path) -> None:
    path = tmp_path / "d.wav"
    path.write_bytes(b"not a riff file at all, just text")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        read_wav(path)


def test_float_wav_rejected(tmp_path: Path) -> None:
    # WAVE_FORMAT_IEEE_FLOAT (3): the stdlib wave module refuses it; we say so clearly.
    data = struct.pack("<4f", 0.0, 0.5, -0.5, 0.25)
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "e.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(ValueError, match=r"e\.wav"):
        read_wav(path)


def test_write_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_wav(tmp_path / "f.wav", b"\x00", 8000)
    with pytest.raises(ValueError):
        write_wav(tmp_path / "f.wav", b"\x00\x00", 0)


# -- levels -----------------------------------------------------------------------------------


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    t = np.arange(8000) / 8000
    x = np.rint(32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
    assert rms_dbfs(x) == pytest.approx(-3.01, abs=0.01)
    assert peak(x) == 32767


def test_square_wave_levels() -> None:
    x = np.array([1000, -1000] * 80, dtype="<i2").tobytes()
    assert rms(x) == pytest.approx(1000.0)
    assert rms_dbfs(x) == pytest.approx(20 * math.log10(1000 / 32768))
    assert peak(x) == 1000


def test_silence_and_empty() -> None:
    assert rms_dbfs(bytes(320)) == -math.inf
    assert rms_dbfs(b"") == -math.inf
    assert peak(b"") == 0
    assert rms(b"") == 0.0


def test_most_negative_sample_peak() -> None:
    assert peak(struct.pack("<2h", -32768, 5)) == 32768


def test_odd_length_rejected() -> None:
    with pytest.raises(ValueError):
        rms_dbfs(b"\x00")
    with pytest.raises(ValueError):
        peak(b"\x00")


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=200))
def test_levels_match_definition(samples: list[int]) -> None:
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    assert peak(pcm) == max(abs(s) for s in samples)
    assert rms(pcm) == pytest.approx(math.sqrt(sum(s * s for s in samples) / len(samples)))
    assert rms_dbfs(pcm) <= 0.0 or rms(pcm) > 32767
