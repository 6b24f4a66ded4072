"""RFC 4733 DTMF: wire layout, receiver de-duplication and loss handling, sender round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.core.events import DtmfDigit
from callbridge.rtp.dtmf import (
    DTMF_DIGITS,
    DtmfReceiver,
    TelephoneEvent,
    digit_to_event,
    dtmf_packets,
    event_to_digit,
)
from callbridge.rtp.packet import RtpPacket

SSRC = 0x1A2B3C4D


def te(
    event: int,
    duration: int,
    *,
    end: bool = False,
    seq: int = 1,
    ts: int = 8000,
    marker: bool = False,
    ssrc: int = SSRC,
    pt: int = 101,
) -> RtpPacket:
    payload = bytes(TelephoneEvent(event, end, 10, duration))
    return RtpPacket(pt, seq, ts, ssrc, payload, marker=marker)


def feed(rx: DtmfReceiver, packets: list[RtpPacket], start: float = 0.0) -> list[DtmfDigit]:
    out: list[DtmfDigit] = []
    for i, p in enumerate(packets):
        out += rx.receive(p, start + i * 0.02)
    return out


# --- wire layout ---------------------------------------------------------------------------


def test_payload_layout_rfc4733_section_2_3() -> None:
    # event 1, E=1, R=0, volume 10, duration 1280 (160 ms at 8 kHz)
    assert bytes(TelephoneEvent(1, True, 10, 1280)) == bytes([0x01, 0x8A, 0x05, 0x00])
    assert bytes(TelephoneEvent(11, False, 63, 160)) == bytes([0x0B, 0x3F, 0x00, 0xA0])
    assert TelephoneEvent.parse(bytes([0x01, 0x8A, 0x05, 0x00])) == TelephoneEvent(
        1, True, 10, 1280
    )
    # The R bit is ignored on receipt.
    assert TelephoneEvent.parse(bytes([0x05, 0xCA, 0x00, 0x50])) == TelephoneEvent(5, True, 10, 80)
    assert TelephoneEvent.parse(b"\x01\x8a\x05") is None


# A SIPp dtmf_2833_1.pcap-style key press, as datagrams written out by hand: RTP header
# (V=2, PT 101, marker on the first), then event 1 / volume 10 with growing duration; the
# final packet (E bit, duration 1280) is sent three times with the same sequence number.
SIPP_DIGIT_1 = [
    bytes.fromhex("80e5 0100 0000fa00 deadbeef 010a00a0"),  # start, M bit, duration 160
    bytes.fromhex("8065 0101 0000fa00 deadbeef 010a0140"),  # duration 320
    bytes.fromhex("8065 0102 0000fa00 deadbeef 010a0280"),  # duration 640
    bytes.fromhex("8065 0103 0000fa00 deadbeef 010a03c0"),  # duration 960
    bytes.fromhex("8065 0104 0000fa00 deadbeef 018a0500"),  # end, duration 1280
    bytes.fromhex("8065 0104 0000fa00 deadbeef 018a0500"),  # end, repeated, same sequence
    bytes.fromhex("8065 0104 0000fa00 deadbeef 018a0500"),  # end, repeated, same sequence
]


def test_sipp_style_capture_reports_one_digit() -> None:
    packets = [RtpPacket.parse(d) for d in SIPP_DIGIT_1]
    assert packets[0].marker and packets[0].payload_type == 101
    assert packets[-1].payload == b"\x01\x8a\x05\x00"
    rx = DtmfReceiver()
    assert feed(rx, packets) == [DtmfDigit("1", 160)]
    assert rx.poll(10.0) == []


def test_end_retransmissions_with_new_sequence_numbers_report_once() -> None:
    """baresip style: each retransmitted end packet has its own sequence number."""
    packets = [te(5, 160, seq=10, marker=True), te(5, 320, seq=11)]
    packets += [te(5, 800, end=True, seq=s) for s in (12, 13, 14)]
    assert feed(DtmfReceiver(), packets) == [DtmfDigit("5", 100)]


def test_only_end_packets_arrive() -> None:
    packets = [te(11, 1600, end=True, seq=s) for s in (7, 8, 9)]
    assert feed(DtmfReceiver(), packets) == [DtmfDigit("#", 200)]


def test_same_digit_pressed_twice_is_two_events() -> None:
    rx = DtmfReceiver()
    first = [te(2, 160, seq=1, ts=1000, marker=True)] + [
        te(2, 800, end=True, seq=s, ts=1000) for s in (2, 3, 4)
    ]
    second = [te(2, 160, seq=5, ts=3000, marker=True)] + [
        te(2, 960, end=True, seq=s, ts=3000) for s in (6, 7, 8)
    ]
    assert feed(rx, first + second) == [DtmfDigit("2", 100), DtmfDigit("2", 120)]


def test_lost_end_packets_reported_after_timeout() -> None:
    rx = DtmfReceiver(end_timeout=0.5)
    assert rx.receive(te(9, 160, marker=True), 1.0) == []
    assert rx.receive(te(9, 320, seq=2), 1.02) == []
    assert rx.poll(1.3) == []
    assert rx.poll(1.52) == [DtmfDigit("9", 40)]
    assert rx.poll(5.0) == []
    # A straggling end packet of the same event must not report it again.
    assert rx.receive(te(9, 400, end=True, seq=3), 1.6) == []


def test_new_event_reports_previous_whose_end_was_lost() -> None:
    rx = DtmfReceiver()
    assert rx.receive(te(3, 160, ts=100, marker=True), 0.0) == []
    assert rx.receive(te(3, 480, ts=100, seq=2), 0.04) == []
    assert rx.receive(te(4, 160, ts=2000, seq=3, marker=True), 0.3) == [DtmfDigit("3", 60)]
    assert rx.receive(te(4, 640, ts=2000, seq=4, end=True), 0.36) == [DtmfDigit("4", 80)]


def test_update_after_end_is_ignored() -> None:
    rx = DtmfReceiver()
    assert rx.receive(te(7, 800, end=True, seq=5), 0.0) == [DtmfDigit("7", 100)]
    assert rx.receive(te(7, 480, seq=4), 0.01) == []  # reordered, older update
    assert rx.poll(10.0) == []


def test_sources_are_independent() -> None:
    rx = DtmfReceiver()
    a = te(1, 160, ssrc=1, ts=500, marker=True)
    b = te(2, 160, ssrc=2, ts=500, marker=True)
    assert rx.receive(a, 0.0) == rx.receive(b, 0.0) == []
    assert rx.receive(te(2, 320, ssrc=2, ts=500, end=True), 0.02) == [DtmfDigit("2", 40)]
    assert rx.receive(te(1, 320, ssrc=1, ts=500, end=True), 0.02) == [DtmfDigit("1", 40)]


@pytest.mark.parametrize("event", [16, 32, 70, 255])
def test_non_dtmf_events_ignored(event: int) -> None:
    rx = DtmfReceiver()
    assert rx.receive(te(event, 800, end=True), 0.0) == []
    assert rx.poll(10.0) == []


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x8a", b"\x01\x8a\x05"])
def test_short_payload_ignored(payload: bytes) -> None:
    rx = DtmfReceiver()
    assert rx.receive(RtpPacket(101, 1, 1, 1, payload), 0.0) == []
    assert rx.poll(10.0) == []


def test_long_duration_event_segments_are_one_key_press() -> None:
    """RFC 4733 §2.5.1.3: at 0xFFFF the sender starts a new segment at ts + 0xFFFF."""
    rx = DtmfReceiver()
    ts0 = 0xFFFF0000  # the second segment's timestamp wraps past 2^32
    first = [te(0, 160, ts=ts0, marker=True, seq=1), te(0, 0xFFFF, ts=ts0, seq=2)]
    ts1 = (ts0 + 0xFFFF) & 0xFFFFFFFF
    second = [te(0, 800, ts=ts1, seq=3), te(0, 1600, ts=ts1, seq=4, end=True)]
    second += [te(0, 1600, ts=ts1, seq=5, end=True)]
    digits = feed(rx, first + second)
    assert digits == [DtmfDigit("0", round((0xFFFF + 1600) / 8))]
    assert rx.poll(100.0) == []


def test_long_event_end_lost_reports_total_after_timeout() -> None:
    rx = DtmfReceiver(end_timeout=0.5)
    feed(rx, [te(0, 0xFFFF, ts=0, marker=True), te(0, 800, ts=0xFFFF, seq=2)])
    assert rx.poll(0.6) == [DtmfDigit("0", round((0xFFFF + 800) / 8))]


def test_receiver_clock_rate_scales_duration() -> None:
    rx = DtmfReceiver(clock_rate=16000)
    assert rx.receive(te(1, 1600, end=True), 0.0) == [DtmfDigit("1", 100)]


# --- sender --------------------------------------------------------------------------------


def test_event_digit_mapping() -> None:
    assert [event_to_digit(e) for e in range(16)] == list("0123456789*#ABCD")
    assert event_to_digit(16) is None
    assert digit_to_event("*") == 10
    assert digit_to_event("#") == 11
    assert digit_to_event("d") == 15


@pytest.mark.parametrize("bad", ["", "E", "12", "x", " ", "١"])
def test_invalid_digit_raises(bad: str) -> None:
    with pytest.raises(ValueError, match="DTMF digit"):
        dtmf_packets(bad, payload_type=101, ssrc=1, first_sequence=0, timestamp=0)


def test_packet_train_shape() -> None:
    train = dtmf_packets("1", payload_type=101, ssrc=SSRC, first_sequence=65533, timestamp=12345)
    offsets = [o for o, _ in train]
    packets = [p for _, p in train]
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert len(train) == 7 + 3
    assert [p.marker for p in packets] == [True] + [False] * 9
    assert {p.timestamp for p in packets} == {12345}
    assert {p.ssrc for p in packets} == {SSRC}
    assert {p.payload_type for p in packets} == {101}
    # Sequence numbers are consecutive and wrap at 2^16.
    assert [p.sequence for p in packets] == [65533, 65534, 65535, 0, 1, 2, 3, 4, 5, 6]
    assert [e.duration for e in events if e] == [
        160,
        320,
        480,
        640,
        800,
        960,
        1120,
        1280,
        1280,
        1280,
    ]
    assert [e.end for e in events if e] == [False] * 7 + [True] * 3
    assert {e.volume for e in events if e} == {10}
    assert offsets == pytest.approx([i * 0.02 for i in range(10)])


def test_short_digit_is_end_packets_only_with_marker_on_first() -> None:
    train = dtmf_packets(
        "#", payload_type=96, ssrc=1, first_sequence=0, timestamp=0, duration_ms=10
    )
    assert len(train) == 3
    assert [p.marker for _, p in train] == [True, False, False]
    assert all(
        TelephoneEvent.parse(p.payload) == TelephoneEvent(11, True, 10, 80) for _, p in train
    )


def test_sender_parameter_validation() -> None:
    kw = {"payload_type": 101, "ssrc": 1, "first_sequence": 0, "timestamp": 0}
    with pytest.raises(ValueError):
        dtmf_packets("1", **kw, volume=64)
    with pytest.raises(ValueError):
        dtmf_packets("1", **kw, duration_ms=0)
    with pytest.raises(ValueError):
        dtmf_packets("1", **kw, end_repeats=0)
    with pytest.raises(ValueError):
        dtmf_packets("1", payload_type=128, ssrc=1, first_sequence=0, timestamp=0)
    with pytest.raises(ValueError):
        dtmf_packets("1", **kw, duration_ms=9000)


@pytest.mark.parametrize("digit", list(DTMF_DIGITS))
def test_round_trip_every_digit(digit: str) -> None:
    train = dtmf_packets(
        digit, payload_type=101, ssrc=7, first_sequence=100, timestamp=800, duration_ms=200
    )
    rx = DtmfReceiver()
    got: list[DtmfDigit] = []
    for offset, packet in train:
        got += rx.receive(RtpPacket.parse(bytes(packet)), offset)
    assert got == [DtmfDigit(digit, 200)]
    assert rx.poll(100.0) == []


@settings(max_examples=200, deadline=None)
@given(
    digit=st.sampled_from(DTMF_DIGITS),
    duration_ms=st.integers(10, 2000),
    data=st.data(),
)
def test_any_loss_reorder_duplication_reports_exactly_once(
    digit: str, duration_ms: int, data: st.DataObject
) -> None:
    train = [
        p
        for _, p in dtmf_packets(
            digit, payload_type=101, ssrc=9, first_sequence=0, timestamp=0, duration_ms=duration_ms
        )
    ]
    arrived = data.draw(st.lists(st.sampled_from(train), min_size=1, max_size=3 * len(train)))
    rx = DtmfReceiver()
    got: list[DtmfDigit] = []
    for i, packet in enumerate(arrived):
        got += rx.receive(packet, i * 0.01)
    got += rx.poll(1000.0)
    assert [d.digit for d in got] == [digit]
    assert 0 < got[0].duration_ms <= duration_ms
