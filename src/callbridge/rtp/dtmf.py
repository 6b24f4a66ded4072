"""RFC 4733 telephone-event DTMF: receive (one digit per key press) and send. Sans-IO.

Payload layout (RFC 4733 §2.3), network order:

     0                   1                   2                   3
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from callbridge.core.events import DtmfDigit
from callbridge.rtp.packet import RtpPacket

__all__ = [
    "DTMF_DIGITS",
    "DtmfReceiver",
    "TelephoneEvent",
    "digit_to_event",
    "dtmf_packets",
    "event_to_digit",
]

DTMF_DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2 table 1: event codes 0-15 in order
_PAYLOAD = struct.Struct("!BBH")
_MAX_DURATION = 0xFFFF
_REMEMBERED_EVENTS = 64
# One stream plays from one SSRC; a few allow for a re-anchoring B2BUA. More are spoofed
# packets, which must not grow this state (each would live until poll's timeout).
_MAX_ACTIVE_SSRCS = 8


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One 4-byte event block."""

    event: int
    end: bool
    volume: int  # 0-63, -dBm0
    duration: int  # in RTP timestamp units, 16 bit

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent | None:
        """The first event block, or None when the payload is too short to hold one."""
        if len(payload) < _PAYLOAD.size:
            return None
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        # R bit stays 0: RFC 4733 §2.3 says senders MUST clear it.
        return _PAYLOAD.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF
        )


def digit_to_event(digit: str) -> int:
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r} (expected one of {DTMF_DIGITS})")
    return index


def event_to_digit(event: int) -> str | None:
    return DTMF_DIGITS[event] if 0 <= event < len(DTMF_DIGITS) else None


@dataclass(slots=True)
class _Active:
    ssrc: int
    timestamp: int
    event: int
    digit: str
    duration: int  # highest duration seen in the current segment
    carried: int  # duration of earlier segments of a long event (RFC 4733 §2.5.1.3)
    last_seen: float


class DtmfReceiver:
    """Turns telephone-event packets into one DtmfDigit per key press.

    An event is identified by (SSRC, RTP timestamp): RFC 4733 §2.5.1.2 keeps the timestamp
    fixed across all updates of one event, and §2.5.1.4 repeats the final packet (same
    timestamp; SIPp's pcaps even reuse the sequence number), so identity cannot come from
    sequence numbers. Feed only packets with the negotiated telephone-event payload type.
    """

    def __init__(self, clock_rate: int = 8000, end_timeout: float = 0.5) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        self._clock_rate = clock_rate
        self._end_timeout = end_timeout
        self._active: dict[int, _Active] = {}  # by SSRC: an SSRC plays one event at a time
        self._finished: OrderedDict[tuple[int, int], None] = OrderedDict()

    def receive(self, packet: RtpPacket, now: float) -> list[DtmfDigit]:
        block = TelephoneEvent.parse(packet.payload)
        digit = event_to_digit(block.event) if block is not None else None
        if block is None or digit is None:
            return []  # too short, or a non-DTMF event (RFC 4734 tones, flash): not ours to report
        key = (packet.ssrc, packet.timestamp)
        if key in self._finished:
            return []  # the repeated final packets, or a late update after the end
        out: list[DtmfDigit] = []
        active = self._active.get(packet.ssrc)
        carried = 0
        if active is not None and active.timestamp != packet.timestamp:
            if self._continues(active, packet, block):
                carried = active.carried + active.duration
                self._finish(active)
                del self._active[packet.ssrc]
            else:
                # A new event began, so the old one ended even though its E packets were lost.
                out.append(self._report(active, active.duration))
            active = None
        if active is None:
            if len(self._active) >= _MAX_ACTIVE_SSRCS and packet.ssrc not in self._active:
                # Evict the stalest event unreported: it stopped sending updates anyway.
                stalest = min(self._active.values(), key=lambda a: a.last_seen)
                self._finish(stalest)
                del self._active[stalest.ssrc]
            active = _Active(packet.ssrc, packet.timestamp, block.event, digit, 0, carried, now)
            self._active[packet.ssrc] = active
        active.duration = max(active.duration, block.duration)
        active.last_seen = now
        if block.end:
            out.append(self._report(active, active.duration))
        return out

    def poll(self, now: float) -> list[DtmfDigit]:
        """Report events whose end packets were all lost, once end_timeout passes in silence."""
        stale = [a for a in self._active.values() if now - a.last_seen >= self._end_timeout]
        return [self._report(a, a.duration) for a in stale]

    def _continues(self, active: _Active, packet: RtpPacket, block: TelephoneEvent) -> bool:
        # RFC 4733 §2.5.1.3: a long event is cut into segments when duration would overflow
        # 16 bits; the next segment has a new timestamp at the old one's end and no marker.
        gap = (packet.timestamp - active.timestamp) & 0xFFFFFFFF
        return (
            block.event == active.event
            and not packet.marker
            and active.duration >= _MAX_DURATION - self._clock_rate // 10
            and gap <= _MAX_DURATION
        )

    def _report(self, active: _Active, duration: int) -> DtmfDigit:
        self._active.pop(active.ssrc, None)
        self._finish(active)
        total = active.carried + duration
        return DtmfDigit(digit=active.digit, duration_ms=round(total * 1000 / self._clock_rate))

    def _finish(self, active: _Active) -> None:
        self._finished[(active.ssrc, active.timestamp)] = None
        while len(self._finished) > _REMEMBERED_EVENTS:
            self._finished.popitem(last=False)


def dtmf_packets(
    digit: str,
    *,
    payload_type: int,
    ssrc: int,
    first_sequence: int,
    timestamp: int,
    duration_ms: int = 160,
    volume: int = 10,
    packet_ms: int = 20,
    end_repeats: int = 3,
    clock_rate: int = 8000,
) -> list[tuple[float, RtpPacket]]:
    """The packets of one key press, each with its send offset in seconds from the first.

    RFC 4733 §2.5.1.1: marker on the first packet; §2.5.1.2: one timestamp for the whole
    event, duration growing with each update; §2.5.1.4: the final packet, E bit set, is sent
    end_repeats times. Every packet gets its own sequence number (RFC 3550 §5.1).
    """
    event = digit_to_event(digit)
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload_type {payload_type} out of range 0-127")
    if not 0 <= volume <= 63:
        raise ValueError(f"volume {volume} out of range 0-63 (-dBm0)")
    if duration_ms <= 0 or packet_ms <= 0 or end_repeats < 1:
        raise ValueError("duration_ms and packet_ms must be positive, end_repeats at least 1")
    step = clock_rate * packet_ms // 1000
    total = clock_rate * duration_ms // 1000
    if total > _MAX_DURATION:
        raise ValueError(f"duration_ms {duration_ms} needs long-event segmentation; keep it short")
    durations = [*range(step, total, step), total]
    packets: list[tuple[float, RtpPacket]] = []

    def add(offset_ms: int, duration: int, end: bool) -> None:
        payload = bytes(TelephoneEvent(event, end, volume, duration))
        packet = RtpPacket(
            payload_type=payload_type,
            sequence=(first_sequence + len(packets)) & 0xFFFF,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=payload,
            marker=not packets,
        )
        packets.append((offset_ms / 1000, packet))

    for i, duration in enumerate(durations[:-1]):
        add(i * packet_ms, duration, end=False)
    last_offset = (len(durations) - 1) * packet_ms
    for r in range(end_repeats):
        add(last_offset + r * packet_ms, total, end=True)
    return packets
