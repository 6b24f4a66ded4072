"""RTCP statistics (RFC 3550 §6.4, §A.1, §A.3, §A.8): what one remote source's packets
say about loss and jitter, our own stream's counts, and the compound reports built from them.

Sans-IO: wall-clock NTP time and monotonic `now` are parameters; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.rtcp_packets import (
    MAX_COUNT,
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    serialize_compound,
)

__all__ = [
    "ReceptionStats",
    "SenderStats",
    "build_bye",
    "build_report",
    "ntp_from_unix",
]

_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


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
        if self._started and not self._probation:
            # The per-packet case of _update_seq inlined: in order, or a small gap.
            max_seq = self._max_seq
            if (sequence - max_seq) % self.SEQ_MOD < self.MAX_DROPOUT:
                if sequence < max_seq:
                    self._cycles += self.SEQ_MOD  # wrapped
                self._max_seq = sequence
                self.received += 1
                valid = True
            else:
                valid = self._update_seq(sequence)
        elif not self._started:
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
        last = self._transit
        if last is not None:
            d = transit - last
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

    def on_sent_payload(self, octets: int, timestamp: int, now: float) -> None:
        """on_sent() for a packet given by its payload length and RTP timestamp."""
        self.packet_count += 1
        self.octet_count += octets  # payload only, §6.4.1
        self._last_rtp = timestamp
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
    first, rest = tuple(blocks[:MAX_COUNT]), blocks[MAX_COUNT:]
    packets: list[RtcpPacket] = []
    if sender is not None and sender.sent_since_report:
        packets.append(sender.sender_report(now, ntp_time, first))
    else:
        packets.append(ReceiverReport(ssrc, first))
    for i in range(0, len(rest), MAX_COUNT):
        packets.append(ReceiverReport(ssrc, tuple(rest[i : i + MAX_COUNT])))
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
