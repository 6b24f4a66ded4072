"""RTCP packets on the wire (RFC 3550 §6): SR, RR, SDES, BYE and unknown types as frozen
dataclasses, serialised with bytes() and parsed from compound datagrams by parse_compound.

Parsing is total and bounded (RtcpParseError, nothing else); the statistics that fill these
packets live in rtp.rtcp_stats. Sans-IO.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from callbridge.core.errors import ProtocolError

__all__ = [
    "MAX_COUNT",
    "MAX_PACKETS",
    "MAX_SDES_ITEMS",
    "SDES_CNAME",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpParseError",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "parse_compound",
    "serialize_compound",
]

PT_SR, PT_RR, PT_SDES, PT_BYE = 200, 201, 202, 203
SDES_CNAME = 1
_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packet count, octet count
MAX_COUNT = 31  # 5-bit RC/SC field
# Work per datagram is bounded by these, not only by its size: a 64 KiB datagram of 16,000
# empty packets, or one SDES chunk of 30,000 items, took ~30 ms each to walk.
# §6.1: a compound packet is a report, maybe more RRs (31 blocks each), SDES, BYE or APP.
MAX_PACKETS = 64
# §6.5: eight item types are defined (CNAME ... PRIV); a chunk carries each at most once or so.
MAX_SDES_ITEMS = 16


class RtcpParseError(ProtocolError, ValueError):
    """Malformed RTCP; the message says what was wrong."""


# --- wire types ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost/expected * 256 over the last interval
    cumulative_lost: int  # signed 24 bit
    highest_sequence: int  # extended: cycles << 16 | max sequence
    jitter: int  # timestamp units
    last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    delay_since_last_sr: int = 0  # units of 1/65536 s

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        # §6.4.1: cumulative loss is signed 24-bit and saturates rather than wrapping.
        cumulative = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | cumulative,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.last_sr & 0xFFFFFFFF,
            self.delay_since_last_sr & 0xFFFFFFFF,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1)."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP: seconds << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension (§6.4.1), kept opaque

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc,
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,  # §6.4.1: the counts wrap
            self.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(bytes(r) for r in self.reports) + self.extension
        return _packet(PT_SR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _packet(PT_RR, len(self.reports), body + self.extension)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, str], ...]  # (item type, text); 1 = CNAME

    @property
    def cname(self) -> str | None:
        return next((text for kind, text in self.items if kind == SDES_CNAME), None)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...]

    def __bytes__(self) -> bytes:
        body = b""
        for chunk in self.chunks:
            data = struct.pack("!I", chunk.ssrc)
            for kind, text in chunk.items:
                raw = text.encode("utf-8")
                if not 1 <= kind <= 255 or len(raw) > 255:
                    raise ValueError(f"SDES item type {kind} or length {len(raw)} out of range")
                data += bytes((kind, len(raw))) + raw
            # §6.5: the item list ends with a null octet, then nulls to the next 32-bit boundary.
            data += b"\x00" * (4 - len(data) % 4)
            body += data
        return _packet(PT_SDES, len(self.chunks), body)


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 §6.6)."""

    ssrcs: tuple[int, ...]
    reason: str | None = None

    def __bytes__(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason is not None:
            raw = self.reason.encode("utf-8")[:255]
            body += bytes((len(raw),)) + raw
            body += b"\x00" * (-len(body) % 4)
        return _packet(PT_BYE, len(self.ssrcs), body)


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """APP, feedback (RFC 4585) and anything else: carried, not interpreted."""

    packet_type: int
    count: int  # the 5-bit field after P
    body: bytes

    def __bytes__(self) -> bytes:
        return _packet(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"RTCP count {count} exceeds {MAX_COUNT}; split into several packets")
    first = 0x80 | count
    if len(body) % 4:
        # Only an opaque body (unknown type, profile extension) can be unaligned: it came
        # from a padded packet, so pad it again (§6.4.1 P bit; the last octet is the count).
        pad = 4 - len(body) % 4
        body += b"\x00" * (pad - 1) + bytes((pad,))
        first |= 0x20
    # §6.4.1: length counts 32-bit words minus one, header included, i.e. the body's words.
    return _HEADER.pack(first, packet_type, len(body) // 4) + body


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    return b"".join(bytes(p) for p in packets)


# --- parsing -------------------------------------------------------------------------------


def _blocks(
    body: bytes, offset: int, count: int, what: str
) -> tuple[tuple[ReportBlock, ...], bytes]:
    end = offset + count * _BLOCK.size
    if end > len(body):
        raise RtcpParseError(f"{what}: {count} report blocks do not fit in {len(body)} octets")
    blocks = tuple(ReportBlock.parse(body, offset + i * _BLOCK.size) for i in range(count))
    return blocks, body[end:]


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RtcpParseError("SDES: chunk truncated")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items: list[tuple[int, str]] = []
        while True:
            if pos >= len(body):
                raise RtcpParseError("SDES: item list not terminated")
            kind = body[pos]
            if kind == 0:
                pos = (pos + 4) & ~3  # END plus padding to the 32-bit boundary (§6.5)
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpParseError("SDES: item truncated")
            length = body[pos + 1]
            if len(items) >= MAX_SDES_ITEMS:
                raise RtcpParseError(f"SDES: more than {MAX_SDES_ITEMS} items in a chunk")
            items.append((kind, body[pos + 2 : pos + 2 + length].decode("utf-8", "replace")))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    end = 4 * count
    if end > len(body):
        raise RtcpParseError(f"BYE: {count} SSRCs do not fit in {len(body)} octets")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    if end < len(body):
        length = body[end]
        if end + 1 + length > len(body):
            raise RtcpParseError("BYE: reason truncated")
        reason = body[end + 1 : end + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(ssrcs), reason)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    match packet_type:
        case 200:  # SR
            if len(body) < _SENDER_INFO.size:
                raise RtcpParseError("SR shorter than its sender info")
            ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
            blocks, ext = _blocks(body, _SENDER_INFO.size, count, "SR")
            return SenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks, ext)
        case 201:  # RR
            if len(body) < 4:
                raise RtcpParseError("RR shorter than its SSRC")
            (ssrc,) = struct.unpack_from("!I", body)
            blocks, ext = _blocks(body, 4, count, "RR")
            return ReceiverReport(ssrc, blocks, ext)
        case 202:
            return _parse_sdes(body, count)
        case 203:
            return _parse_bye(body, count)
        case _:
            return UnknownRtcp(packet_type, count, body)


def parse_compound(data: bytes) -> tuple[RtcpPacket, ...]:
    """Parse a compound RTCP datagram (RFC 3550 §6.1). Raises RtcpParseError, nothing else.

    Checks per §A.2: version 2 throughout, lengths adding up to the datagram, padding only on
    the last packet. Bounded: every count is checked against the octets present, each packet
    advances by at least its 4-octet header (length 0 included), and MAX_PACKETS and
    MAX_SDES_ITEMS cap the per-datagram work. The first packet is not required to be SR/RR so that reduced-size RTCP
    (RFC 5506) parses too.
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise RtcpParseError("shorter than an RTCP header")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if pos + _HEADER.size > len(data):
            raise RtcpParseError(f"trailing {len(data) - pos} octets after the last packet")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpParseError(f"RTCP version {first >> 6} at offset {pos}, expected 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RtcpParseError(f"length field ({words} words) overruns the datagram at {pos}")
        body = data[pos + _HEADER.size : end]
        if first & 0x20:
            if end != len(data):
                raise RtcpParseError("padding on a packet that is not the last one (§A.2)")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpParseError(f"bad padding count {pad}")
            body = body[: len(body) - pad]
        if len(packets) >= MAX_PACKETS:
            raise RtcpParseError(f"more than {MAX_PACKETS} packets in one compound")
        packets.append(_parse_one(packet_type, first & 0x1F, body))
        pos = end
    return tuple(packets)
