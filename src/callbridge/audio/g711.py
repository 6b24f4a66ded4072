"""ITU-T G.711 µ-law (PCMU) and A-law (PCMA) via precomputed lookup tables.

Decoding indexes a 256-entry PCM16 table with the code bytes; encoding indexes a
65536-entry code table with the uint16 view of each PCM16 sample. Both tables are
built once, vectorised, from the segment/quantisation rules of the ITU-T G.191
reference software (g711.c). With the native build a conversion is one C loop over these same
tables (audio/_g711.c); without it, encoding is a numpy `take` and decoding two
`bytes.translate` calls.

Negative samples are quantised on their one's complement (`~x`), as the ITU
reference does: the code for `x` and `-x - 1` differ only in the sign bit. (Sun's
classic g711.c, and so Python's `audioop`, negate instead, which moves some
negative inputs one 14-bit step for µ-law; decoded values are identical.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

try:  # the lookups in C (audio/_g711.c), when the native build is loaded
    from callbridge.audio._g711 import decode as _c_decode
    from callbridge.audio._g711 import encode as _c_encode

    C_LOOKUPS = True
except ImportError:
    C_LOOKUPS = False

__all__ = [
    "PCMA",
    "PCMU",
    "G711Codec",
    "alaw_decode",
    "alaw_encode",
    "codec_for",
    "codec_for_payload_type",
    "ulaw_decode",
    "ulaw_encode",
]

_ULAW_BIAS: Final = 0x84  # 132: µ-law decision levels are offset by 33 in 14-bit units
_ULAW_CLIP: Final = 8159  # largest µ-law magnitude in 14-bit units
# Segment end points (inclusive) in the 14-bit (µ-law, biased) and 13-bit (A-law) domains.
_ULAW_SEG_END: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int64) & 0xFF  # µ-law codes are transmitted inverted
    t = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype("<i2")


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int64) ^ 0x55  # A-law inverts the even bits
    seg = (code & 0x70) >> 4
    t = ((code & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype("<i2")


def _all_samples() -> npt.NDArray[np.int64]:
    # Indexed by the uint16 view: 0..32767 are themselves, 32768..65535 are -32768..-1.
    return np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16).astype(np.int64)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_samples()
    negative = x < 0
    mag = np.where(negative, ~x, x) >> 2  # 14-bit magnitude, one's complement for negatives
    mag = np.minimum(mag, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")  # first segment whose end >= mag
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_samples()
    negative = x < 0
    mag = np.where(negative, ~x, x) >> 3  # 13-bit magnitude, one's complement for negatives
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    quant = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | quant)
    return (code ^ np.where(negative, 0x55, 0xD5)).astype(np.uint8)


_ULAW_DEC: Final = _ulaw_decode_table()
_ALAW_DEC: Final = _alaw_decode_table()
_ULAW_ENC: Final = _ulaw_encode_table()
_ALAW_ENC: Final = _alaw_encode_table()


_U2: Final = np.dtype("<u2")  # a dtype object, not a string: no parsing per call


def _split(table: npt.NDArray[np.int16]) -> tuple[bytes, bytes]:
    raw = table.tobytes()
    return raw[0::2], raw[1::2]


# Decoding per byte is two bytes.translate() calls (low and high PCM octets) interleaved:
# cheaper than a numpy round trip for a 160-byte payload, and the same table.
_ULAW_LO, _ULAW_HI = _split(_ULAW_DEC)
_ALAW_LO, _ALAW_HI = _split(_ALAW_DEC)


def _decode(data: bytes, lo: bytes, hi: bytes) -> bytes:
    if type(data) is not bytes:  # bytearray, memoryview: any buffer decodes, as with numpy
        data = bytes(data)
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(lo)
    out[1::2] = data.translate(hi)
    return bytes(out)


def _encode(table: npt.NDArray[np.uint8], pcm: bytes) -> bytes:
    if len(pcm) % 2:
        raise ValueError("PCM16 input must have an even number of bytes")
    return table.take(np.frombuffer(pcm, dtype=_U2)).tobytes()


# The tables as the C lookups take them: 256 PCM16 samples, 65,536 codes.
_ULAW_DEC_BYTES: Final = _ULAW_DEC.tobytes()
_ALAW_DEC_BYTES: Final = _ALAW_DEC.tobytes()
_ULAW_ENC_BYTES: Final = _ULAW_ENC.tobytes()
_ALAW_ENC_BYTES: Final = _ALAW_ENC.tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """µ-law codes -> PCM16 little-endian (one sample per byte)."""
    if C_LOOKUPS:
        return _c_decode(_ULAW_DEC_BYTES, data)
    return _decode(data, _ULAW_LO, _ULAW_HI)


def alaw_decode(data: bytes) -> bytes:
    """A-law codes -> PCM16 little-endian (one sample per byte)."""
    if C_LOOKUPS:
        return _c_decode(_ALAW_DEC_BYTES, data)
    return _decode(data, _ALAW_LO, _ALAW_HI)


def ulaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian -> µ-law codes (one byte per sample)."""
    if C_LOOKUPS:
        return _c_encode(_ULAW_ENC_BYTES, pcm)
    return _encode(_ULAW_ENC, pcm)


def alaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian -> A-law codes (one byte per sample)."""
    if C_LOOKUPS:
        return _c_encode(_ALAW_ENC_BYTES, pcm)
    return _encode(_ALAW_ENC, pcm)


@dataclass(frozen=True, slots=True)
class G711Codec:
    """One G.711 variant as negotiated in SDP (RFC 3551 §6 static payload types)."""

    name: str  # "PCMU" | "PCMA", the rtpmap encoding name
    payload_type: int
    silence_byte: int  # the code of a zero sample, for padding/comfort frames
    clock_rate: int = 8000

    def encode(self, pcm: bytes) -> bytes:
        match self.name:
            case "PCMU":
                return ulaw_encode(pcm)
            case "PCMA":
                return alaw_encode(pcm)
            case _:
                raise ValueError(f"not a G.711 codec: {self.name}")

    def decode(self, data: bytes) -> bytes:
        match self.name:
            case "PCMU":
                return ulaw_decode(data)
            case "PCMA":
                return alaw_decode(data)
            case _:
                raise ValueError(f"not a G.711 codec: {self.name}")

    def silence(self, samples: int) -> bytes:
        return bytes((self.silence_byte,)) * samples


PCMU: Final = G711Codec("PCMU", 0, 0xFF)
PCMA: Final = G711Codec("PCMA", 8, 0xD5)


def codec_for(name: str) -> G711Codec:
    """Codec for an rtpmap encoding name (case-insensitive, RFC 4566 §6); ValueError if unknown."""
    match name.upper():
        case "PCMU":
            return PCMU
        case "PCMA":
            return PCMA
        case _:
            raise ValueError(f"unsupported G.711 encoding name: {name!r}")


def codec_for_payload_type(payload_type: int) -> G711Codec:
    """Codec for a static RTP payload type (RFC 3551 table 4); ValueError if not G.711."""
    match payload_type:
        case 0:
            return PCMU
        case 8:
            return PCMA
        case _:
            raise ValueError(f"payload type {payload_type} is not a static G.711 type")
