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
from callbridge.audio.wav import (
    WavFormat,
    WavStream,
    parse_wav_bytes,
    read_wav,
    wav_bytes,
    write_wav,
)


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


# -- WAV in memory ----------------------------------------------------------------------------


def _riff(*chunks: bytes, riff_size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _chunk(chunk_id: bytes, data: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(data) % 2 else b""
    return chunk_id + struct.pack("<I", len(data) if size is None else size) + data + pad


def _fmt(channels: int = 1, rate: int = 24000, bits: int = 16, tag: int = 1) -> bytes:
    block = channels * bits // 8
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits))


def _extensible(sub_tag: int, bits: int = 16) -> bytes:
    block = bits // 8
    base = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 16000 * block, block, bits)
    ext = struct.pack("<HHI", 22, bits, 4) + struct.pack("<H", sub_tag) + bytes(14)
    return _chunk(b"fmt ", base + ext)


PCM = np.arange(-600, 600, 7, dtype="<i2").tobytes()


def test_wav_bytes_is_a_standard_file_that_round_trips(tmp_path: Path) -> None:
    data = wav_bytes(PCM, 16000)
    assert len(data) == 44 + len(PCM)
    path = tmp_path / "m.wav"
    path.write_bytes(data)
    assert read_wav(path) == (PCM, 16000)
    write_wav(path, PCM, 16000)
    assert path.read_bytes() == data  # same bytes as the stdlib writer
    assert parse_wav_bytes(data) == (PCM, 16000)
    assert parse_wav_bytes(wav_bytes(b"", 8000)) == (b"", 8000)


def test_wav_bytes_validates() -> None:
    with pytest.raises(ValueError, match="even"):
        wav_bytes(b"\x00", 8000)
    with pytest.raises(ValueError, match="positive"):
        wav_bytes(b"", 0)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF, 0x7FFFF000])
def test_streaming_sizes_take_the_data_to_the_end(size: int) -> None:
    data = _riff(_fmt(), _chunk(b"data", PCM, size=size), riff_size=size)
    assert parse_wav_bytes(data) == (PCM, 24000)


def test_rf64_is_accepted() -> None:
    data = _riff(_fmt(), _chunk(b"data", PCM, size=0xFFFFFFFF))
    assert parse_wav_bytes(b"RF64" + data[4:]) == (PCM, 24000)


def test_other_chunks_skipped_and_data_size_respected() -> None:
    data = _riff(
        _chunk(b"JUNK", b"odd"),  # odd size: padded to a word
        _fmt(),
        _chunk(b"LIST", b"INFOsome text"),
        _chunk(b"data", PCM),
        _chunk(b"id3 ", b"\xff" * 99),
    )
    assert parse_wav_bytes(data) == (PCM, 24000)


def test_stereo_and_more_channels_are_averaged() -> None:
    stereo = struct.pack("<6h", 100, 300, -1000, -2000, 32767, 32767)
    assert parse_wav_bytes(_riff(_fmt(channels=2), _chunk(b"data", stereo))) == (
        struct.pack("<3h", 200, -1500, 32767),
        24000,
    )
    three = struct.pack("<3h", 30, 60, 90)
    assert parse_wav_bytes(_riff(_fmt(channels=3), _chunk(b"data", three)))[0] == struct.pack(
        "<h", 60
    )


def test_partial_sample_frame_at_the_end_is_dropped() -> None:
    stereo = struct.pack("<3h", 10, 20, 30)
    assert parse_wav_bytes(_riff(_fmt(channels=2), _chunk(b"data", stereo, size=0))) == (
        struct.pack("<h", 15),
        24000,
    )


def test_extensible_pcm_is_accepted_and_float_is_not() -> None:
    assert parse_wav_bytes(_riff(_extensible(1), _chunk(b"data", PCM))) == (PCM, 16000)
    with pytest.raises(ValueError, match="float samples; expected 16-bit integer PCM"):
        parse_wav_bytes(_riff(_extensible(3, bits=32), _chunk(b"data", bytes(8))))


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (_fmt(bits=8), "8-bit samples; expected 16-bit integer PCM"),
        (_fmt(bits=24), "24-bit samples; expected 16-bit integer PCM"),
        (_fmt(bits=32), "32-bit samples; expected 16-bit integer PCM"),
        (_fmt(bits=32, tag=3), "32-bit float samples"),
        (_fmt(tag=0x55), "format tag 0x55 \\(compressed\\)"),
        (_fmt(channels=0), "0 channel"),
        (_chunk(b"fmt ", bytes(8)), "bad WAV fmt chunk size 8"),
        (_chunk(b"fmt ", bytes(16), size=1 << 20), "bad WAV fmt chunk size"),
    ],
)
def test_unusable_formats_rejected_clearly(fmt: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wav_bytes(_riff(fmt, _chunk(b"data", bytes(12))))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "ended before its fmt chunk"),
        (b"ID3\x04" + bytes(40), "not a RIFF/WAVE stream"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a RIFF/WAVE stream"),
        (_riff(_chunk(b"data", PCM), _fmt()), "data chunk before its fmt chunk"),
        (_riff(_fmt())[:30], "ended before its fmt chunk"),
        (_riff(_fmt()), "ended before its data chunk"),
    ],
)
def test_broken_files_rejected_clearly(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wav_bytes(data)


def test_stream_gives_audio_as_soon_as_whole_frames_arrive() -> None:
    data = _riff(_fmt(channels=2, rate=8000), _chunk(b"data", struct.pack("<4h", 2, 4, 6, 8)))
    stream = WavStream()
    assert stream.feed(data[:44]) == b""  # header only
    assert stream.format == WavFormat(rate=8000, channels=2)
    assert stream.feed(data[44:47]) == b""  # 3 of a frame's 4 bytes
    assert stream.feed(data[47:49]) == struct.pack("<h", 3)
    assert not stream.done
    assert stream.feed(data[49:]) == struct.pack("<h", 7)
    assert stream.done
    assert stream.feed(b"more") == b""
    assert stream.finish() == WavFormat(rate=8000, channels=2)


@given(
    cuts=st.lists(st.integers(0, 400), max_size=20),
    size=st.sampled_from([None, 0, 0xFFFFFFFF]),
)
def test_stream_result_does_not_depend_on_how_bytes_arrive(
    cuts: list[int], size: int | None
) -> None:
    data = _riff(_chunk(b"JUNK", b"abc"), _fmt(), _chunk(b"data", PCM[:300], size=size))
    stream = WavStream()
    out, pos = [], 0
    for cut in [*sorted(cuts), len(data)]:
        out.append(stream.feed(data[pos:cut] if cut > pos else b""))
        pos = max(pos, cut)
    assert stream.finish().rate == 24000
    assert b"".join(out) == PCM[:300]
