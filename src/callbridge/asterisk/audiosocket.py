"""AudioSocket framing, both directions: an incremental decoder and an encoder.

Source: asterisk/asterisk@f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9,
include/asterisk/res_audiosocket.h (the kinds), res/res_audiosocket.c (what Asterisk writes,
lines 189-280, and what it accepts, lines 287-425), apps/app_audiosocket.c and
channels/chan_audiosocket.c (who uses it).

A frame is a 3-byte header - kind, payload length as a big-endian uint16 - and the payload, so
no frame is longer than 3 + 65535 bytes. Asterisk is always the TCP client: it sends the UUID
first (kind 0x01, 16 raw bytes), then audio and DTMF; it never sends 0x00 or 0xff itself (it
closes the socket instead), although the protocol page and older peers use them. From the
server it accepts only hangup (0x00) and audio kinds (0x10-0x18); anything else, or an audio
frame of length 0, makes it log an error and end the call (res_audiosocket.c:338-376).

There is no silence kind (0x02) in the source: the header stops at 0x01, 0x03, 0x10-0x18, 0xff.
The error codes of 0xff are not in Asterisk's source either: they come from the protocol's
reference library (github.com/CyCoreSystems/audiosocket, audiosocket.go) and docs.asterisk.org.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from callbridge.asterisk.errors import AudioSocketError

__all__ = [
    "AUDIO_KINDS",
    "DTMF_DIGITS",
    "FROM_ASTERISK",
    "HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "SAMPLE_RATES",
    "TO_ASTERISK",
    "Audio",
    "AudioSocketDecoder",
    "AudioSocketError",
    "Dtmf",
    "ErrorCode",
    "ErrorFrame",
    "Frame",
    "Hangup",
    "Kind",
    "UuidFrame",
    "audio_frames",
    "encode",
    "frame_bytes",
    "kind_for_rate",
]

HEADER_BYTES: Final = 3
MAX_PAYLOAD_BYTES: Final = 0xFFFF  # the length field is a uint16 (res_audiosocket.c:298)
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


class Kind(IntEnum):
    """Message kinds, res_audiosocket.h `enum ast_audiosocket_msg_kind`."""

    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10  # slin, 8 kHz: the only rate of the AudioSocket() dialplan application
    AUDIO_SLIN12 = 0x11
    AUDIO_SLIN16 = 0x12
    AUDIO_SLIN24 = 0x13
    AUDIO_SLIN32 = 0x14
    AUDIO_SLIN44 = 0x15
    AUDIO_SLIN48 = 0x16
    AUDIO_SLIN96 = 0x17
    AUDIO_SLIN192 = 0x18
    ERROR = 0xFF


SAMPLE_RATES: Final[dict[Kind, int]] = {
    Kind.AUDIO: 8000,
    Kind.AUDIO_SLIN12: 12000,
    Kind.AUDIO_SLIN16: 16000,
    Kind.AUDIO_SLIN24: 24000,
    Kind.AUDIO_SLIN32: 32000,
    Kind.AUDIO_SLIN44: 44100,
    Kind.AUDIO_SLIN48: 48000,
    Kind.AUDIO_SLIN96: 96000,
    Kind.AUDIO_SLIN192: 192000,
}
_KIND_BY_RATE: Final = {rate: kind for kind, rate in SAMPLE_RATES.items()}
AUDIO_KINDS: Final = frozenset(SAMPLE_RATES)
# What Asterisk writes (res_audiosocket.c:189-280) plus the two kinds other AudioSocket peers
# and the protocol page use; what Asterisk reads (res_audiosocket.c:330-369).
FROM_ASTERISK: Final = frozenset({Kind.UUID, Kind.DTMF, Kind.HANGUP, Kind.ERROR} | AUDIO_KINDS)
TO_ASTERISK: Final = frozenset({Kind.HANGUP} | AUDIO_KINDS)


class ErrorCode(IntFlag):
    """Bit-packed error codes of an 0xff frame (CyCoreSystems/audiosocket audiosocket.go)."""

    NONE = 0x00
    HANGUP = 0x01  # the calling party hung up
    FRAME_FORWARDING = 0x02
    MEMORY = 0x04


@dataclass(frozen=True, slots=True)
class Hangup:
    """0x00: end the call. Asterisk does not read a hangup's payload, so we never send one."""


@dataclass(frozen=True, slots=True)
class UuidFrame:
    """0x01: the call's UUID, the first frame Asterisk sends (res_audiosocket.c:189-216)."""

    value: uuid.UUID


@dataclass(frozen=True, slots=True)
class Dtmf:
    """0x03: one DTMF digit as an ASCII byte, sent at the digit's end (chan_audiosocket.c:118)."""

    digit: str


@dataclass(frozen=True, slots=True)
class Audio:
    """0x10-0x18: signed-linear 16-bit mono PCM, little-endian on the usual hosts."""

    pcm: bytes
    sample_rate: int = 8000


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """0xff: an error; the payload is an optional application-specific code."""

    payload: bytes = b""

    @property
    def code(self) -> ErrorCode | None:
        return ErrorCode(self.payload[0] & 0x07) if self.payload else None


Frame = Hangup | UuidFrame | Dtmf | Audio | ErrorFrame


def kind_for_rate(sample_rate: int) -> Kind:
    """The audio kind carrying `sample_rate`; ValueError for a rate Asterisk has no slin for."""
    try:
        return _KIND_BY_RATE[sample_rate]
    except KeyError:
        raise ValueError(f"no AudioSocket audio kind for {sample_rate} Hz") from None


def frame_bytes(sample_rate: int, ms: int = 20) -> int:
    """Bytes of `ms` of mono slin at `sample_rate` (320 for 20 ms at 8 kHz)."""
    return sample_rate * ms // 1000 * 2


def encode(frame: Frame) -> bytes:
    """The frame on the wire. ValueError for a frame Asterisk would not accept or cannot carry."""
    match frame:
        case Hangup():
            return bytes((Kind.HANGUP, 0, 0))
        case UuidFrame(value=value):
            return bytes((Kind.UUID, 0x00, 0x10)) + value.bytes  # res_audiosocket.c:205-208
        case Dtmf(digit=digit):
            if digit not in DTMF_DIGITS:
                raise ValueError(f"not a DTMF digit: {digit!r}")
            return bytes((Kind.DTMF, 0x00, 0x01)) + digit.encode("ascii")
        case Audio(pcm=pcm, sample_rate=rate):
            kind = kind_for_rate(rate)
            # An empty audio frame is an error to Asterisk and ends the call
            # (res_audiosocket.c:373-376), so it is refused here rather than sent.
            if not pcm:
                raise ValueError("empty audio frame: Asterisk would hang up")
            return _frame(kind, pcm)
        case ErrorFrame(payload=payload):
            return _frame(Kind.ERROR, payload)


def _frame(kind: Kind, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


def audio_frames(pcm: bytes, sample_rate: int = 8000, ms: int = 20) -> list[bytes]:
    """`pcm` cut into encoded `ms` frames (the last one shorter), for pacing by the caller."""
    step = frame_bytes(sample_rate, ms)
    return [encode(Audio(pcm[i : i + step], sample_rate)) for i in range(0, len(pcm), step)]


class AudioSocketDecoder:
    """Bytes in, frames out, for one TCP stream.

    `accept` is the set of kinds this side takes: FROM_ASTERISK for our server (the default),
    TO_ASTERISK to behave as Asterisk does. Memory is bounded by one frame (`max_payload`,
    at most 65535 bytes). On garbage - a kind outside `accept`, a UUID that is not 16 bytes, a
    DTMF that is not one digit, an empty audio frame - `feed` raises AudioSocketError and the
    decoder stays failed (a byte stream cannot be resynchronised); it raises nothing else.
    """

    __slots__ = ("_accept", "_buffer", "_failed", "_max_payload")

    def __init__(
        self, accept: frozenset[Kind] = FROM_ASTERISK, max_payload: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self._accept = accept
        self._max_payload = min(max_payload, MAX_PAYLOAD_BYTES)
        self._buffer = bytearray()
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise AudioSocketError(f"stream already failed: {self._failed}")
        frames: list[Frame] = []
        view = memoryview(data)
        while view:
            if not self._buffer and len(view) >= HEADER_BYTES:
                # Fast path: a whole frame inside `data` is decoded without copying it twice.
                size = HEADER_BYTES + int.from_bytes(view[1:3], "big")
                self._check_header(view[0], size - HEADER_BYTES)
                if len(view) >= size:
                    frames.append(self._decode(view[0], bytes(view[HEADER_BYTES:size])))
                    view = view[size:]
                    continue
            # Take only what completes the current header or frame: the buffer never holds
            # more than one frame whatever the size of `data`.
            take = view[: self._frame_size() - len(self._buffer)]
            self._buffer += take
            view = view[len(take) :]
            if len(self._buffer) == HEADER_BYTES:
                # at once, so garbage fails before its payload arrives
                self._check_header(self._buffer[0], int.from_bytes(self._buffer[1:3], "big"))
            if len(self._buffer) == self._frame_size():
                frames.append(self._decode(self._buffer[0], bytes(self._buffer[HEADER_BYTES:])))
                self._buffer.clear()
        return frames

    def _frame_size(self) -> int:
        if len(self._buffer) < HEADER_BYTES:
            return HEADER_BYTES
        return HEADER_BYTES + int.from_bytes(self._buffer[1:3], "big")

    def _fail(self, why: str) -> AudioSocketError:
        self._failed = why
        return AudioSocketError(why)

    def _check_header(self, raw_kind: int, length: int) -> None:
        try:
            kind = Kind(raw_kind)
        except ValueError:
            raise self._fail(f"unknown AudioSocket kind 0x{raw_kind:02x}") from None
        if kind not in self._accept:
            raise self._fail(f"AudioSocket kind 0x{raw_kind:02x} not expected in this direction")
        if length > self._max_payload:
            raise self._fail(f"AudioSocket payload of {length} bytes exceeds {self._max_payload}")
        if kind is Kind.UUID and length != 16:
            raise self._fail(f"AudioSocket UUID payload of {length} bytes, not 16")
        if kind is Kind.DTMF and length != 1:
            raise self._fail(f"AudioSocket DTMF payload of {length} bytes, not 1")
        if kind in AUDIO_KINDS and length == 0:
            raise self._fail("empty AudioSocket audio frame")  # res_audiosocket.c:373

    def _decode(self, raw_kind: int, payload: bytes) -> Frame:
        kind = Kind(raw_kind)
        match kind:
            case Kind.HANGUP:
                return Hangup()
            case Kind.UUID:
                return UuidFrame(uuid.UUID(bytes=payload))
            case Kind.DTMF:
                digit = chr(payload[0])
                if digit not in DTMF_DIGITS:
                    raise self._fail(f"AudioSocket DTMF byte 0x{payload[0]:02x} is not a digit")
                return Dtmf(digit)
            case Kind.ERROR:
                return ErrorFrame(payload)
            case _:
                return Audio(payload, SAMPLE_RATES[kind])
