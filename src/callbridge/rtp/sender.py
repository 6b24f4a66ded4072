"""RTP packetizer: one SSRC's sequence, timestamp and marker bookkeeping. Sans-IO."""

from __future__ import annotations

import random
import struct

from callbridge.rtp.dtmf import dtmf_packets
from callbridge.rtp.packet import RTP_VERSION, RtpPacket

_HEADER = struct.Struct("!BBHII")  # RFC 3550 §5.1 fixed header, no CSRCs
_B0 = RTP_VERSION << 6

__all__ = ["RtpSender"]


class RtpSender:
    """Stamps payloads into RtpPackets for one outgoing stream (audio and its DTMF)."""

    def __init__(
        self,
        payload_type: int,
        clock_rate: int = 8000,
        ssrc: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload_type {payload_type} out of range 0-127")
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        # RFC 3550 §5.1 / §8.1: random SSRC, initial sequence and timestamp make known-plaintext
        # attacks on encryption harder and make SSRC collisions unlikely.
        rng = rng or random.SystemRandom()
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._ssrc = ssrc if ssrc is not None else rng.getrandbits(32)
        self._sequence = rng.getrandbits(16)
        self._timestamp = rng.getrandbits(32)
        self._packets = 0
        self._octets = 0
        # RFC 3551 §4.1: the first packet of the stream starts a talkspurt.
        self._marker_pending = True

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def next_sequence(self) -> int:
        return self._sequence

    @property
    def next_timestamp(self) -> int:
        return self._timestamp

    @property
    def packets_sent(self) -> int:
        return self._packets

    @property
    def octets_sent(self) -> int:
        """Payload octets, as RFC 3550 §6.4.1 counts them for the SR."""
        return self._octets

    def packet(self, payload: bytes, samples: int, *, talkspurt_start: bool = False) -> RtpPacket:
        """The next packet; advances the sequence by 1 and the timestamp by samples."""
        if samples < 0:
            raise ValueError("samples must not be negative")
        packet = RtpPacket(
            payload_type=self.payload_type,
            sequence=self._sequence,
            timestamp=self._timestamp,
            ssrc=self._ssrc,
            payload=payload,
            # RFC 3551 §4.1: marker on the first packet after silence.
            marker=talkspurt_start or self._marker_pending,
        )
        self._marker_pending = False
        self._advance(1, len(payload))
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        return packet

    def packet_bytes(self, payload: bytes, samples: int, talkspurt_start: bool = False) -> bytes:
        """bytes(self.packet(...)) without the RtpPacket: the per-frame send path."""
        if samples < 0:
            raise ValueError("samples must not be negative")
        # RFC 3551 §4.1: marker on the first packet after silence.
        marker = 0x80 if talkspurt_start or self._marker_pending else 0
        data = _HEADER.pack(
            _B0, marker | (self.payload_type & 0x7F), self._sequence, self._timestamp, self._ssrc
        )
        self._marker_pending = False
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._packets += 1
        self._octets += len(payload)
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        return data + payload

    def skip(self, samples: int) -> None:
        """Time passed with nothing sent (silence suppression, hold): timestamp only.

        RFC 3550 §5.1: the timestamp keeps pace with the sampling clock while the sequence
        number counts packets only, so the receiver sees a gap, not loss.
        """
        if samples < 0:
            raise ValueError("samples must not be negative")
        if samples:
            self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
            self._marker_pending = True

    def dtmf(
        self, digit: str, payload_type: int, duration_ms: int = 160
    ) -> list[tuple[float, RtpPacket]]:
        """RFC 4733 packets for one digit, as (offset seconds, packet).

        They share this stream's SSRC and sequence space (RFC 4733 §2.1: telephone-event is
        another payload type of the same stream) and carry the current timestamp. The caller
        stops sending audio and calls skip() for the event's duration; the next audio packet
        then carries the marker as a talkspurt start.
        """
        packets = dtmf_packets(
            digit,
            payload_type=payload_type,
            ssrc=self._ssrc,
            first_sequence=self._sequence,
            timestamp=self._timestamp,
            duration_ms=duration_ms,
            packet_ms=20,
            clock_rate=self.clock_rate,
        )
        self._advance(len(packets), sum(len(p.payload) for _, p in packets))
        self._marker_pending = True
        return packets

    def _advance(self, packets: int, octets: int) -> None:
        self._sequence = (self._sequence + packets) & 0xFFFF
        self._packets += packets
        self._octets += octets
