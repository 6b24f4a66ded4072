# Frozen copy of the pre-issue-12 implementation: the reference the equivalence tests
# drive side by side with the optimised one. Do not optimise or edit.
# ruff: noqa
# mypy: ignore-errors
"""RTP fixed header (RFC 3550 §5.1): parse and serialise. Sans-IO."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callbridge.core.errors import ProtocolError

_HEADER = struct.Struct("!BBHII")
RTP_VERSION = 2


class RtpParseError(ProtocolError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int  # 16 bit
    timestamp: int  # 32 bit
    ssrc: int  # 32 bit
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < _HEADER.size:
            raise RtpParseError("shorter than the 12-byte RTP header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
        cc = b0 & 0x0F
        offset = _HEADER.size + 4 * cc
        if len(data) < offset:
            raise RtpParseError("CSRC list truncated")
        csrcs = struct.unpack_from(f"!{cc}I", data, _HEADER.size) if cc else ()
        if b0 & 0x10:  # §5.3.1 header extension: skip it
            if len(data) < offset + 4:
                raise RtpParseError("extension header truncated")
            (ext_words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * ext_words
            if len(data) < offset:
                raise RtpParseError("extension truncated")
        end = len(data)
        if b0 & 0x20:  # §5.1 padding: last octet counts the padding octets
            pad = data[-1]
            if pad == 0 or offset + pad > end:
                raise RtpParseError("bad padding length")
            end -= pad
        return cls(
            payload_type=b1 & 0x7F,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(b1 & 0x80),
            csrcs=tuple(csrcs),
        )

    def __bytes__(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        head = _HEADER.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)
        if self.csrcs:
            head += struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        return head + self.payload


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 200-204 occupy the second octet's full range 192-223."""
    return len(data) >= 2 and 192 <= data[1] <= 223
