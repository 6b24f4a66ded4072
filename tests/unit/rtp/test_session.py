"""RtpSession, sans-IO: latching, demux by payload type, DTMF, RTCP, re-INVITE updates."""

from __future__ import annotations

from callbridge.audio.g711 import ulaw_encode
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.rtp.dtmf import dtmf_packets
from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.rtcp import (
    ReceiverReport,
    ReportBlock,
    SenderReport,
    parse_compound,
    serialize_compound,
)
from callbridge.rtp.session import RtpParams, RtpSession

SDP_ADDR = ("127.0.0.1", 40000)
NAT_ADDR = ("127.0.0.1", 51111)  # where the caller's media really comes from
TONE = ulaw_encode(bytes(range(0, 256)) + bytes(64))


def audio(seq: int, ssrc: int = 0x1111) -> bytes:
    return bytes(RtpPacket(0, seq, seq * FRAME_SAMPLES, ssrc, TONE))


def session(**kw: object) -> RtpSession:
    return RtpSession(RtpParams(SDP_ADDR, "PCMU", 0, dtmf_payload_type=101, **kw), 0.0)  # type: ignore[arg-type]


def test_latches_on_first_packet_source_and_ignores_others() -> None:
    s = session()
    assert s.remote == SDP_ADDR
    s.receive(audio(1), NAT_ADDR, 0.02)
    assert s.remote == NAT_ADDR  # symmetric RTP: answer where media comes from
    s.receive(audio(2), ("127.0.0.1", 6666), 0.04)  # an intruder after latching
    assert s.counters.ignored == 1
    assert s.counters.packets_in == 1
    out = s.send_frame(AudioFrame.silence(), 0.04)
    assert out is not None and out.addr == NAT_ADDR


def test_unknown_payload_types_and_garbage_are_ignored_not_raised() -> None:
    s = session()
    s.receive(bytes(RtpPacket(18, 1, 0, 1, b"x" * 20)), NAT_ADDR, 0.0)  # G.729 not negotiated
    s.receive(b"\x00\x01", NAT_ADDR, 0.0)
    s.receive(b"\x80" + b"\x00" * 5, NAT_ADDR, 0.0)
    assert s.counters.ignored == 3 and s.counters.packets_in == 0
    assert s.remote == SDP_ADDR  # nothing valid arrived, nothing latched


def test_dtmf_on_its_own_ssrc_is_reported_once_and_does_not_disturb_audio() -> None:
    s = session()
    for i in range(10):
        s.receive(audio(i), NAT_ADDR, i * 0.02)
    digits: list[DtmfDigit] = []
    for offset, pkt in dtmf_packets(
        "5", payload_type=101, ssrc=0x2222, first_sequence=7, timestamp=999
    ):
        digits += s.receive(bytes(pkt), NAT_ADDR, 0.2 + offset)
    assert [d.digit for d in digits] == ["5"]
    assert s.jitter.stats.resyncs == 0


def test_send_path_marks_talkspurts_and_advances_time_while_silent() -> None:
    s = session()
    first = RtpPacket.parse(s.send_frame(AudioFrame.silence(), 0.0).data)  # type: ignore[union-attr]
    second = RtpPacket.parse(s.send_frame(AudioFrame.silence(), 0.02).data)  # type: ignore[union-attr]
    assert first.marker and not second.marker
    assert second.timestamp - first.timestamp == FRAME_SAMPLES
    assert s.send_frame(None, 0.04) is None  # nothing to play: no packet
    third = RtpPacket.parse(s.send_frame(AudioFrame.silence(), 0.06).data)  # type: ignore[union-attr]
    assert third.marker  # a new talk-spurt after the gap (RFC 3551 §4.1)
    assert third.timestamp - second.timestamp == 2 * FRAME_SAMPLES
    assert third.sequence == (second.sequence + 1) & 0xFFFF


def test_recvonly_and_inactive_directions() -> None:
    s = session(send=False)
    assert s.send_frame(AudioFrame.silence(), 0.0) is None
    r = session(receive=False)
    r.receive(audio(1), NAT_ADDR, 0.0)
    assert r.jitter.stats.received == 0  # counted but not played


def test_rtcp_report_goes_to_the_rtcp_port_with_our_stats_and_reads_theirs() -> None:
    s = session()
    for i in range(50):
        s.receive(audio(i), NAT_ADDR, i * 0.02)
        s.send_frame(AudioFrame.silence(), i * 0.02)
    assert s.rtcp_due(3.0)
    report = s.rtcp_report(3.0, ntp_time=3_900_000_000.0)
    assert report.addr == (NAT_ADDR[0], NAT_ADDR[1] + 1)  # RFC 3550 §11: next port up
    packets = parse_compound(report.data)
    sr = packets[0]
    assert isinstance(sr, SenderReport)
    assert sr.packet_count == 50
    assert sr.reports[0].ssrc == 0x1111 and sr.reports[0].cumulative_lost == 0
    assert not s.rtcp_due(4.0)
    # The peer's receiver report about our stream is kept in the statistics.
    block = ReportBlock(s.sender.ssrc, 64, 7, 100, 80, 0, 0)
    s.receive_rtcp(
        serialize_compound([ReceiverReport(0x1111, (block,))]), ("127.0.0.1", 51112), 4.0
    )
    assert s.counters.remote_cumulative_lost == 7
    assert s.counters.remote_fraction_lost == 0.25
    assert s.rtcp_remote == ("127.0.0.1", 51112)


def test_update_to_a_new_address_drops_the_latch() -> None:
    s = session()
    s.receive(audio(1), NAT_ADDR, 0.0)
    s.update(RtpParams(("127.0.0.1", 42000), "PCMA", 8, 101))
    assert s.remote == ("127.0.0.1", 42000)
    ssrc = s.sender.ssrc
    pkt = RtpPacket.parse(s.send_frame(AudioFrame.silence(), 0.1).data)  # type: ignore[union-attr]
    assert pkt.payload_type == 8 and pkt.ssrc == ssrc  # same source, new codec


def test_silence_is_sent_in_the_calls_codec_and_not_when_sending_is_off() -> None:
    s = session()
    first = RtpPacket.parse(s.send_silence(0.0).data)  # type: ignore[union-attr]
    again = RtpPacket.parse(s.send_silence(0.02).data)  # type: ignore[union-attr]
    assert first.payload == ulaw_encode(bytes(2 * FRAME_SAMPLES)) and first.payload_type == 0
    assert (again.sequence - first.sequence, again.timestamp - first.timestamp) == (1, 160)
    assert s.sender_stats.packet_count == 2
    s.update(RtpParams(SDP_ADDR, "PCMA", 8, 101))
    assert RtpPacket.parse(s.send_silence(0.04).data).payload_type == 8  # type: ignore[union-attr]
    assert session(send=False).send_silence(0.0) is None
