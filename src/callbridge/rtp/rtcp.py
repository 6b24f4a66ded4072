"""RTCP (RFC 3550 §6): SR, RR, SDES, BYE in compound packets, plus the statistics behind them.

Sans-IO: wall-clock NTP time and monotonic `now` are parameters; nothing here reads a clock.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from callbridge.rtp.packet import RtpPacket

__all__ = [
    "MAX_PACKETS",
    "MAX_SDES_ITEMS",
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "RtcpParseError",
    "SdesChunk",
    "SenderReport",
    "SenderStats",
    "SourceDescription",
    "UnknownRtcp",
    "build_bye",
    "build_report",
    "ntp_from_unix",
    "parse_compound",
    "serialize_compound",
]

PT_SR, PT_RR, PT_SDES, PT_BYE = 200, 201, 202, 203
SDES_CNAME = 1
_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packet count, octet count
_MAX_COUNT = 31  # 5-bit RC/SC field
# Work per datagram is bounded by these, not only by its size: a 64 KiB datagram of 16,000
# empty packets, or one SDES chunk of 30,000 items, took ~30 ms each to walk.
# §6.1: a compound packet is a report, maybe more RRs (31 blocks each), SDES, BYE or APP.
MAX_PACKETS = 64
# §6.5: eight item types are defined (CNAME ... PRIV); a chunk carries each at most once or so.
MAX_SDES_ITEMS = 16
_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


class RtcpParseError(ValueError):
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
    if not 0 <= count <= _MAX_COUNT:
        raise ValueError(f"RTCP count {count} exceeds {_MAX_COUNT}; split into several packets")
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


# --- statistics ----------------------------------------------------------------------------


def ntp_from_unix(unix_time: float) -> float:
    """NTP seconds (since 1900) for a Unix time; pass the result as build_report's ntp_time."""
    return unix_time + _NTP_UNIX_OFFSET


def _ntp64(ntp_time: float) -> int:
    seconds = int(ntp_time)
    fraction = int((ntp_time - seconds) * (1 << 32)) & 0xFFFFFFFF
    return (seconds & 0xFFFFFFFF) << 32 | fraction


class ReceptionStats:
    """One remote source's reception statistics (RFC 3550 §A.1, §A.3, §A.8)."""

    MAX_DROPOUT = 3000
    MAX_MISORDER = 100
    SEQ_MOD = 1 << 16

    def __init__(self, ssrc: int, clock_rate: int = 8000, *, min_sequential: int = 2) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._min_sequential = min_sequential
        self._started = False
        self._probation = min_sequential
        self._max_seq = 0
        self._base_seq = 0
        self._bad_seq = self.SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._transit: float | None = None
        self.jitter = 0.0  # timestamp units, §A.8 estimator
        self._last_sr = 0
        self._last_sr_at: float | None = None
        self._heard = False

    def _init_seq(self, seq: int) -> None:
        self._base_seq = self._max_seq = seq
        self._bad_seq = self.SEQ_MOD + 1  # so seq == bad_seq is false
        self._cycles = 0
        self.received = self._received_prior = self._expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        """§A.1 update_seq: False while on probation or after a big jump."""
        udelta = (seq - self._max_seq) % self.SEQ_MOD
        if self._probation:
            if seq == (self._max_seq + 1) % self.SEQ_MOD:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
            return False
        if udelta < self.MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += self.SEQ_MOD  # wrapped
            self._max_seq = seq
        elif udelta <= self.SEQ_MOD - self.MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) % self.SEQ_MOD
                return False
            # Two sequential packets after a big jump: the source restarted.
            self._init_seq(seq)
        # else: duplicate or reordered packet, counted but not a new maximum
        self.received += 1
        return True

    def update(self, sequence: int, rtp_timestamp: int, arrival: float) -> bool:
        """Account one packet; arrival is monotonic seconds. False if §A.1 rejects it."""
        if not self._started:
            self._started = True
            if self._min_sequential <= 0:
                self._init_seq(sequence)
                self.received = 1
                valid = True
            else:
                self._init_seq(sequence)
                self._max_seq = (sequence - 1) % self.SEQ_MOD
                valid = self._update_seq(sequence)
        else:
            valid = self._update_seq(sequence)
        if not valid:
            return False
        self._heard = True
        # §A.8: transit-time differences in timestamp units, smoothed with gain 1/16.
        transit = arrival * self.clock_rate - rtp_timestamp
        if self._transit is not None:
            d = transit - self._transit
            d = (d + 2**31) % 2**32 - 2**31  # the RTP timestamp wrapped, not the network
            self.jitter += (abs(d) - self.jitter) / 16
        self._transit = transit
        return True

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember an SR from this source, for LSR/DLSR (§6.4.1)."""
        self._last_sr = (ntp_timestamp >> 16) & 0xFFFFFFFF
        self._last_sr_at = now

    @property
    def extended_highest_sequence(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_highest_sequence - self._base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def heard_since_report(self) -> bool:
        return self._heard

    def report_block(self, now: float) -> ReportBlock:
        """The §A.3 figures for this source; closes the reporting interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = int((now - self._last_sr_at) * 65536)
        self._heard = False
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.lost,
            highest_sequence=self.extended_highest_sequence & 0xFFFFFFFF,
            jitter=int(self.jitter),
            last_sr=self._last_sr,
            delay_since_last_sr=max(0, dlsr),
        )


class SenderStats:
    """Our outgoing stream's counts and NTP/RTP timestamp mapping for the SR (§6.4.1)."""

    def __init__(self, ssrc: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.packet_count = 0
        self.octet_count = 0
        self._last_rtp: int | None = None
        self._last_sent_at = 0.0
        self._sent_since_report = False

    def on_sent(self, packet: RtpPacket, now: float) -> None:
        self.packet_count += 1
        self.octet_count += len(packet.payload)  # payload only, §6.4.1
        self._last_rtp = packet.timestamp
        self._last_sent_at = now
        self._sent_since_report = True

    @property
    def sent_since_report(self) -> bool:
        return self._sent_since_report

    def rtp_timestamp_at(self, now: float) -> int:
        """§6.4.1: the RTP timestamp matching the SR's NTP instant, extrapolated from the
        last packet with the media clock (not the last packet's own timestamp)."""
        if self._last_rtp is None:
            return 0
        elapsed = round((now - self._last_sent_at) * self.clock_rate)
        return (self._last_rtp + elapsed) & 0xFFFFFFFF

    def sender_report(
        self, now: float, ntp_time: float, reports: Sequence[ReportBlock] = ()
    ) -> SenderReport:
        self._sent_since_report = False
        return SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=_ntp64(ntp_time),
            rtp_timestamp=self.rtp_timestamp_at(now),
            packet_count=self.packet_count,
            octet_count=self.octet_count,
            reports=tuple(reports),
        )


def build_report(
    ssrc: int,
    cname: str,
    *,
    now: float,
    ntp_time: float,
    sender: SenderStats | None = None,
    receptions: Sequence[ReceptionStats] = (),
) -> bytes:
    """A compound RTCP packet (§6.1): SR if we sent since the last report, else RR; then
    any further RRs for report blocks beyond 31; then SDES CNAME.

    now is monotonic seconds (for DLSR and the RTP timestamp); ntp_time is wall-clock NTP
    seconds (see ntp_from_unix).
    """
    blocks = [r.report_block(now) for r in receptions if r.heard_since_report]
    first, rest = tuple(blocks[:_MAX_COUNT]), blocks[_MAX_COUNT:]
    packets: list[RtcpPacket] = []
    if sender is not None and sender.sent_since_report:
        packets.append(sender.sender_report(now, ntp_time, first))
    else:
        packets.append(ReceiverReport(ssrc, first))
    for i in range(0, len(rest), _MAX_COUNT):
        packets.append(ReceiverReport(ssrc, tuple(rest[i : i + _MAX_COUNT])))
    packets.append(SourceDescription((SdesChunk(ssrc, ((SDES_CNAME, cname),)),)))
    return serialize_compound(packets)


def build_bye(ssrc: int, cname: str, reason: str | None = None) -> bytes:
    """§6.1: a BYE still travels in a compound packet that starts with a report and SDES."""
    return serialize_compound(
        (
            ReceiverReport(ssrc),
            SourceDescription((SdesChunk(ssrc, ((SDES_CNAME, cname),)),)),
            Bye((ssrc,), reason),
        )
    )
