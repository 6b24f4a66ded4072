"""G.711 tables against an independent scalar transcription of the ITU-T G.191 reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import g711

# -- reference: ITU-T G.191 STL g711.c, transcribed sample by sample --------------------------


def ref_alaw_compress(lin: int) -> int:
    ix = (~lin) >> 4 if lin < 0 else lin >> 4  # 1's complement for negative values
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if lin >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def ref_alaw_expand(log: int) -> int:
    ix = (log ^ 0x0055) & 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if log > 127 else -mant


def ref_ulaw_compress(lin: int) -> int:
    absno = ((~lin) >> 2) + 33 if lin < 0 else (lin >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    log = (high_nibble << 4) | low_nibble
    if lin >= 0:
        log |= 0x0080
    return log


def ref_ulaw_expand(log: int) -> int:
    sign = -1 if log < 0x0080 else 1
    mantissa = ~log
    exponent = (mantissa >> 4) & 0x0007
    segment = exponent + 1
    mantissa &= 0x000F
    step = 4 << segment
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2")


def decoded(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


# -- exactness --------------------------------------------------------------------------------


def test_ulaw_decode_all_256_codes() -> None:
    assert decoded(g711.ulaw_decode(ALL_CODES)) == [ref_ulaw_expand(c) for c in range(256)]


def test_alaw_decode_all_256_codes() -> None:
    assert decoded(g711.alaw_decode(ALL_CODES)) == [ref_alaw_expand(c) for c in range(256)]


def test_ulaw_encode_all_65536_samples() -> None:
    got = list(g711.ulaw_encode(ALL_SAMPLES.tobytes()))
    assert got == [ref_ulaw_compress(x) for x in range(-32768, 32768)]


def test_alaw_encode_all_65536_samples() -> None:
    got = list(g711.alaw_encode(ALL_SAMPLES.tobytes()))
    assert got == [ref_alaw_compress(x) for x in range(-32768, 32768)]


@pytest.mark.parametrize(
    ("decode", "code", "value"),
    [
        (g711.ulaw_decode, 0xFF, 0),
        (g711.ulaw_decode, 0x7F, 0),  # "negative zero"
        (g711.ulaw_decode, 0x00, -32124),
        (g711.ulaw_decode, 0x80, 32124),
        (g711.ulaw_decode, 0xFE, 8),
        (g711.ulaw_decode, 0x7E, -8),
        (g711.alaw_decode, 0xD5, 8),
        (g711.alaw_decode, 0x55, -8),
        (g711.alaw_decode, 0xAA, 32256),
        (g711.alaw_decode, 0x2A, -32256),
    ],
)
def test_known_points(decode: object, code: int, value: int) -> None:
    assert callable(decode)
    assert decoded(decode(bytes([code]))) == [value]


@pytest.mark.parametrize(
    ("encode", "sample", "code"),
    [
        (g711.ulaw_encode, 0, 0xFF),
        (g711.ulaw_encode, -1, 0x7F),
        (g711.ulaw_encode, 32767, 0x80),
        (g711.ulaw_encode, -32768, 0x00),
        (g711.alaw_encode, 0, 0xD5),
        (g711.alaw_encode, -1, 0x55),
        (g711.alaw_encode, 32767, 0xAA),
        (g711.alaw_encode, -32768, 0x2A),
    ],
)
def test_known_encodings(encode: object, sample: int, code: int) -> None:
    assert callable(encode)
    assert encode(np.array([sample], dtype="<i2").tobytes()) == bytes([code])


def test_encode_of_decode_is_identity_for_every_code() -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES
    back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    # µ-law has two zeros (0xFF, 0x7F); zero encodes as +0 (0xFF).
    assert [c for c in range(256) if back[c] != c] == [0x7F]
    assert back[0x7F] == 0xFF


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)],
)
def test_quantisation_is_monotonic_and_symmetric(encode: object, decode: object) -> None:
    assert callable(encode)
    assert callable(decode)
    y = np.frombuffer(decode(encode(ALL_SAMPLES.tobytes())), dtype="<i2").astype(np.int64)
    assert np.all(np.diff(y) >= 0)
    # One's-complement symmetry: x and -x-1 quantise to mirror values.
    x = ALL_SAMPLES.astype(np.int64)
    mirror = y[(-x - 1) + 32768]
    nonzero = y != 0
    assert np.array_equal(y[nonzero], -mirror[nonzero])
    # Error is within half a quantisation step, which is at most 1024 (top segment).
    assert np.max(np.abs(y - x)) <= 1024 + 8


@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0))
def test_arbitrary_pcm_round_trips_within_step(pcm: bytes) -> None:
    for codec in (g711.PCMU, g711.PCMA):
        code = codec.encode(pcm)
        assert len(code) == len(pcm) // 2
        again = codec.encode(codec.decode(code))
        assert again == code or codec.name == "PCMU"  # PCMU: -0 may become +0
        assert codec.decode(again) == codec.decode(code)


def test_odd_pcm_length_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        g711.ulaw_encode(b"\x00\x01\x02")


def test_empty_input() -> None:
    assert g711.ulaw_decode(b"") == b"" == g711.alaw_encode(b"")


# -- codec objects ----------------------------------------------------------------------------


def test_codec_lookup() -> None:
    assert g711.codec_for("PCMU") is g711.PCMU
    assert g711.codec_for("pcma") is g711.PCMA
    assert g711.codec_for_payload_type(0) is g711.PCMU
    assert g711.codec_for_payload_type(8) is g711.PCMA
    assert (g711.PCMU.payload_type, g711.PCMA.payload_type) == (0, 8)
    assert g711.PCMU.clock_rate == g711.PCMA.clock_rate == 8000
    with pytest.raises(ValueError):
        g711.codec_for("G722")
    with pytest.raises(ValueError):
        g711.codec_for_payload_type(9)


def test_codec_methods_and_silence() -> None:
    pcm = np.array([0, 1000, -1000, 32767], dtype="<i2").tobytes()
    assert g711.PCMU.encode(pcm) == g711.ulaw_encode(pcm)
    assert g711.PCMA.decode(b"\x12\x34") == g711.alaw_decode(b"\x12\x34")
    for codec in (g711.PCMU, g711.PCMA):
        assert codec.encode(bytes(320)) == codec.silence(160)
    assert g711.PCMU.decode(g711.PCMU.silence(2)) == bytes(4)
    assert decoded(g711.PCMA.decode(g711.PCMA.silence(2))) == [8, 8]  # A-law has no zero
    with pytest.raises(ValueError):
        g711.G711Codec("G729", 18, 0).encode(pcm)


# -- the C lookups and the numpy fallback -----------------------------------------------------


def test_the_c_lookups_are_loaded_with_the_native_build() -> None:
    from callbridge import native

    assert native.status().native == g711.C_LOOKUPS


@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0))
def test_both_ways_give_the_same_bytes(pcm: bytes) -> None:
    """Whichever path runs (C with the native build), the numpy/translate fallback agrees."""
    for enc, table in ((g711.ulaw_encode, g711._ULAW_ENC), (g711.alaw_encode, g711._ALAW_ENC)):
        assert enc(pcm) == g711._encode(table, pcm)
    codes = pcm[: len(pcm) // 2]
    for dec, lo, hi in ((g711.ulaw_decode, g711._ULAW_LO, g711._ULAW_HI),
                        (g711.alaw_decode, g711._ALAW_LO, g711._ALAW_HI)):  # fmt: skip
        got = dec(codes)
        assert type(got) is bytes and got == g711._decode(codes, lo, hi)


def test_the_c_lookups_take_any_buffer_and_check_their_tables() -> None:
    if not g711.C_LOOKUPS:  # interpreted: nothing compiled to check
        return
    from callbridge.audio import _g711 as c

    pcm = ALL_SAMPLES[::97].tobytes()
    for buffer in (bytearray(pcm), memoryview(pcm)):
        assert c.encode(g711._ULAW_ENC_BYTES, buffer) == g711.ulaw_encode(pcm)
        assert c.decode(g711._ALAW_DEC_BYTES, buffer) == g711.alaw_decode(pcm)
    with pytest.raises(ValueError, match="even"):
        c.encode(g711._ALAW_ENC_BYTES, memoryview(b"abc"))
    with pytest.raises(TypeError, match="65536"):
        c.encode(g711._ALAW_DEC_BYTES, pcm)  # a decode table is not an encode table
    with pytest.raises(TypeError, match="512"):
        c.decode(g711._ALAW_ENC_BYTES, pcm)


def test_odd_pcm_length_rejected_by_alaw_too() -> None:
    with pytest.raises(ValueError, match="even"):
        g711.alaw_encode(b"\x00\x01\x02")
