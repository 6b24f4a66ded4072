"""One RTP media session (RFC 3550), sans-IO: demux, symmetric latching, decode, jitter, DTMF, send.

The asyncio shell (`rtp/socket.py`) feeds datagrams in and calls `tick()` every 20 ms on an
absolute schedule; everything here is driven by `now`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from callbridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.net import Addr, Datagram
from callbridge.rtp.dtmf import DtmfReceiver
from callbridge.rtp.jitter import JitterBuffer, JitterConfig
from callbridge.rtp.packet import RtpPacket, RtpParseError
from callbridge.rtp.rtcp import (
    ReceiverReport,
    ReceptionStats,
    RtcpParseError,
    SenderReport,
    SenderStats,
    build_bye,
    build_report,
    parse_compound,
)
from callbridge.rtp.sender import RtpSender

# The plain fixed header (RFC 3550 §5.1) the receive hot path unpacks without RtpPacket.
_FIELDS = struct.Struct("!xBHII")  # marker/PT octet, sequence, timestamp, SSRC
_FIXED = 12
_PLAIN_B0 = 0x80  # version 2, P=0, X=0, CC=0

RTCP_INTERVAL = 5.0  # RFC 3550 §6.2: the minimum interval for a two-party session
MAX_SSRCS = 16  # reception statistics kept per session (a stream rarely has more than 2)
# Frames played in the band before the leg's phase may move: the first move soon (a call's
# first second would otherwise carry up to a tick of avoidable delay), later ones on 1 s.
FIRST_ALIGN_FRAMES = 3
ALIGN_FRAMES = 50
# Kept back from the measured slack: the arrivals' base and the target drift a little, and a
# tick that came before its frame was due would make the buffer insert a frame (+20 ms).
ALIGN_MARGIN = 0.001
# Ticks between slack() measurements (not one per tick); the first comes as soon as
# FIRST_ALIGN_FRAMES can have played.
SLACK_EVERY = 10
FIRST_SLACK_TICK = FIRST_ALIGN_FRAMES + 1


_CODECS = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}
# One 20 ms frame of silence per codec, encoded once: a quiet call sends it 50 times a second.
_SILENCE = {name: enc(bytes(2 * FRAME_SAMPLES)) for name, (enc, _) in _CODECS.items()}


@dataclass(frozen=True, slots=True)
class RtpParams:
    """What offer/answer agreed, in RTP's own terms (no SDP types here)."""

    remote: Addr
    codec: str  # "PCMU" | "PCMA"
    payload_type: int
    dtmf_payload_type: int | None = None
    ptime_ms: int = 20
    send: bool = True  # our direction allows sending
    receive: bool = True


@dataclass(slots=True)
class RtpCounters:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    ignored: int = 0  # from an unlatched source, malformed, or an unknown payload type
    rtcp_in: int = 0
    rtcp_out: int = 0
    ssrcs_in: set[int] = field(default_factory=set)
    # What the far end reports about our stream (RTCP report blocks about our SSRC).
    remote_fraction_lost: float = 0.0
    remote_cumulative_lost: int = 0
    remote_jitter_ms: float = 0.0


class RtpSession:
    def __init__(
        self,
        params: RtpParams,
        now: float,
        jitter: JitterConfig | None = None,
        latch: bool = True,
        cname: str = "callbridge",
    ) -> None:
        self.params = params
        self.cname = cname
        self.receptions: dict[int, ReceptionStats] = {}
        self.jitter = JitterBuffer(jitter or JitterConfig())
        self.dtmf_rx = DtmfReceiver()
        self.counters = RtpCounters()
        self._encode, self._decode = _CODECS[params.codec]
        self.sender = RtpSender(params.payload_type)
        self.sender_stats = SenderStats(self.sender.ssrc)
        self._next_rtcp = now + RTCP_INTERVAL / 2  # §6.2: first report after half an interval
        self._rtcp_latched: Addr | None = None
        self._latch = latch
        self._latched: Addr | None = None
        self._remote = params.remote
        self.last_rx = now  # for the inactivity timeout
        self._sending_talkspurt = False
        self._dtmf_heard = False
        self._align_frames = FIRST_ALIGN_FRAMES
        self._slack_in = FIRST_SLACK_TICK  # ticks until the next slack()
        # Set by the tick that measured the slack (None on the others): what the leg returns
        # to the media clock to move its phase.
        self.advance: float | None = None

    # ---- configuration changes (re-INVITE) ----------------------------------------------------

    def update(self, params: RtpParams) -> None:
        if params.remote != self.params.remote:
            # A new media address from signalling wins over what we latched (RFC 3264 §8.3.1).
            self._latched = None
            self._remote = params.remote
        if params.codec != self.params.codec:
            self._encode, self._decode = _CODECS[params.codec]
        if params.payload_type != self.params.payload_type:
            # Keep the SSRC (RFC 3550 §8: it names the source, not the codec); a new PT is fine.
            self.sender = RtpSender(params.payload_type, ssrc=self.sender.ssrc)
        self.params = params

    @property
    def remote(self) -> Addr:
        return self._latched or self._remote

    # ---- receive --------------------------------------------------------------------------------

    def receive_rtcp(self, data: bytes, source: Addr, now: float) -> None:
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            self.counters.ignored += 1
            return
        self.counters.rtcp_in += 1
        self._rtcp_latched = source
        for packet in packets:
            if isinstance(packet, SenderReport):
                rx = self.receptions.get(packet.ssrc)
                if rx is not None:
                    rx.on_sender_report(packet.ntp_timestamp, now)
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self.sender.ssrc:
                        c = self.counters
                        c.remote_fraction_lost = block.fraction_lost / 256
                        c.remote_cumulative_lost = block.cumulative_lost
                        c.remote_jitter_ms = 1000 * block.jitter / 8000

    def receive(self, data: bytes, source: Addr, now: float) -> list[DtmfDigit]:
        # The hot path (one call per packet): fields are unpacked straight from the header
        # when it is the plain 12-byte one, so no RtpPacket is built for audio.
        n = len(data)
        if n >= 2 and 192 <= data[1] <= 223:  # RFC 5761 multiplexing on the RTP port
            self.receive_rtcp(data, source, now)
            return []
        if n >= _FIXED and data[0] == _PLAIN_B0:  # V=2, no padding, extension or CSRC
            b1, sequence, timestamp, ssrc = _FIELDS.unpack_from(data)
            pt = b1 & 0x7F
            packet = None
        else:
            try:
                packet = RtpPacket.parse(data)
            except RtpParseError:
                self.counters.ignored += 1
                return []
            pt, sequence, timestamp, ssrc = (
                packet.payload_type,
                packet.sequence,
                packet.timestamp,
                packet.ssrc,
            )
            b1 = 0x80 if packet.marker else 0
        params = self.params
        c = self.counters
        if pt not in (params.payload_type, params.dtmf_payload_type):
            c.ignored += 1
            return []
        latched = self._latched
        if latched is None:
            if self._latch:
                # Symmetric RTP / comedia: answer to where the media really comes from (NAT).
                self._latched = source
        elif source != latched:
            c.ignored += 1
            return []
        self.last_rx = now
        c.packets_in += 1
        c.bytes_in += n
        rx = self.receptions.get(ssrc)
        if rx is None:
            # Bounded: a peer that changes SSRC on every packet must not grow memory.
            if len(self.receptions) >= MAX_SSRCS:
                del self.receptions[next(iter(self.receptions))]
            rx = self.receptions[ssrc] = ReceptionStats(ssrc, min_sequential=0)
            if len(c.ssrcs_in) < MAX_SSRCS:
                c.ssrcs_in.add(ssrc)
        rx.update(sequence, timestamp, now)
        if not params.receive:
            return []
        if pt == params.dtmf_payload_type:
            self._dtmf_heard = True
            return self.dtmf_rx.receive(packet or RtpPacket.parse(data), now)
        payload = data[_FIXED:] if packet is None else packet.payload
        self.jitter.push(ssrc, sequence, timestamp, self._decode(payload), now, b1 > 0x7F)
        return []

    def slack(self) -> float | None:
        """Seconds by which the caller's frames were due before this session's ticks, over
        the last ALIGN_FRAMES frames or more (FIRST_ALIGN_FRAMES the first time; None until
        then): what the leg gains by ticking that much earlier (transports.media_clock
        phases). Counting starts again."""
        slack = self.jitter.take_slack(self._align_frames)
        if slack is None:
            return None
        self._align_frames = ALIGN_FRAMES
        return slack - ALIGN_MARGIN

    def tick(self, now: float, late: float = 0.0) -> tuple[AudioFrame | None, list[DtmfDigit]]:
        """The caller's next 20 ms (None while no stream is playing) and DTMF whose end was
        lost. `late`: how long after its scheduled time this tick runs (see slack()); every
        SLACK_EVERY ticks the slack is measured into `advance`."""
        frame = self.jitter.pop(now, late)
        self._slack_in -= 1
        if self._slack_in:
            self.advance = None
        else:
            self._slack_in = SLACK_EVERY
            self.advance = self.slack()
        # poll() can only report events receive() started: skip it until DTMF was heard.
        return frame, self.dtmf_rx.poll(now) if self._dtmf_heard else []

    # ---- send -----------------------------------------------------------------------------------

    def send_frame(self, frame: AudioFrame | None, now: float) -> Datagram | None:
        """Packetise one 20 ms frame; None means nothing to play (timestamps still advance)."""
        if frame is None or not self.params.send:
            self.sender.skip(FRAME_SAMPLES)
            self._sending_talkspurt = False
            return None
        pcm = frame.pcm
        return self._send(self._encode(pcm), len(pcm) // 2, now)

    def send_silence(self, now: float) -> Datagram | None:
        """One 20 ms frame of silence (the line never goes quiet), encoded once per codec."""
        if not self.params.send:
            return self.send_frame(None, now)
        return self._send(_SILENCE[self.params.codec], FRAME_SAMPLES, now)

    def _send(self, payload: bytes, samples: int, now: float) -> Datagram:
        sender = self.sender
        timestamp = sender.next_timestamp
        data = sender.packet_bytes(payload, samples, not self._sending_talkspurt)
        self._sending_talkspurt = True
        self.sender_stats.on_sent_payload(len(payload), timestamp, now)
        c = self.counters
        c.packets_out += 1
        c.bytes_out += len(data)
        return Datagram(data, self._latched or self._remote)

    def dtmf(self, digit: str, duration_ms: int = 160) -> list[tuple[float, bytes]]:
        """RFC 4733 packets for one digit as (offset seconds, datagram); [] if not negotiated."""
        pt = self.params.dtmf_payload_type
        if pt is None:
            return []
        self._sending_talkspurt = False
        return [(offset, bytes(p)) for offset, p in self.sender.dtmf(digit, pt, duration_ms)]

    def rtcp_due(self, now: float) -> bool:
        return now >= self._next_rtcp

    def rtcp_report(self, now: float, ntp_time: float) -> Datagram:
        """A compound SR/RR + SDES (§6.1) to the peer's RTCP address; schedules the next one."""
        self._next_rtcp = now + RTCP_INTERVAL
        self.counters.rtcp_out += 1
        data = build_report(
            self.sender.ssrc,
            self.cname,
            now=now,
            ntp_time=ntp_time,
            sender=self.sender_stats,
            receptions=list(self.receptions.values()),
        )
        return Datagram(data, self.rtcp_remote)

    def rtcp_bye(self) -> Datagram:
        return Datagram(build_bye(self.sender.ssrc, self.cname), self.rtcp_remote)

    @property
    def rtcp_remote(self) -> Addr:
        # RFC 3550 §11: RTCP on the next port up, unless the peer showed us where it sends from.
        if self._rtcp_latched is not None:
            return self._rtcp_latched
        host, port = self.remote
        return (host, port + 1)

    def stats(self) -> dict[str, int | float]:
        c = self.counters
        j = self.jitter.stats
        return {
            "rtp_in": c.packets_in,
            "rtp_out": c.packets_out,
            "rtp_ignored": c.ignored,
            "rtcp_in": c.rtcp_in,
            "rtcp_out": c.rtcp_out,
            "lost": sum(max(0, r.lost) for r in self.receptions.values()),
            "jitter_ms": round(
                max((r.jitter for r in self.receptions.values()), default=0.0) / 8, 2
            ),
            "remote_lost": c.remote_cumulative_lost,
            "concealed": j.lost,
            "late": j.late,
            "duplicates": j.duplicates,
            "resyncs": j.resyncs,
            # How long the caller's audio waited in the gateway at the end (the jitter
            # buffer's target plus the wait for the leg's tick), and the target alone.
            "playout_delay_ms": round(1000 * j.delay, 1),
            "jitter_target_ms": round(1000 * j.target_delay, 1),
            # Audio the buffer synthesised to deepen, or removed to get shallower: each insert
            # is delay the rest of the call carries until a pause lets it go.
            "inserted_ms": round(j.inserted / 8, 1),  # samples at 8 kHz (G.711) to ms
            "dropped_ms": round(j.dropped / 8, 1),
        }
