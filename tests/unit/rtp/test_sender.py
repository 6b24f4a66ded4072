"""RtpSender: sequence/timestamp arithmetic, wrap-around, markers, DTMF in the same stream."""

from __future__ import annotations

import random

import pytest

from callbridge.rtp.dtmf import TelephoneEvent
from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.sender import RtpSender


class FixedRng(random.Random):
    """Hands out preset values for getrandbits, in call order."""

    def __init__(self, *values: int) -> None:
        super().__init__(0)
        self._values = list(values)

    def getrandbits(self, k: int) -> int:
        value = self._values.pop(0)
        assert 0 <= value < 1 << k
        return value


def sender(seq: int = 1000, ts: int = 50_000, pt: int = 0) -> RtpSender:
    return RtpSender(pt, ssrc=0xCAFEBABE, rng=FixedRng(seq, ts))


def test_initial_state_from_rng() -> None:
    s = RtpSender(8, rng=FixedRng(0x11223344, 777, 123456))
    assert (s.ssrc, s.next_sequence, s.next_timestamp) == (0x11223344, 777, 123456)
    assert (s.packets_sent, s.octets_sent) == (0, 0)
    assert s.payload_type == 8 and s.clock_rate == 8000


def test_default_rng_randomises_ssrc_sequence_and_timestamp() -> None:
    senders = [RtpSender(0) for _ in range(4)]
    assert len({s.ssrc for s in senders}) > 1
    assert len({(s.next_sequence, s.next_timestamp) for s in senders}) > 1


def test_packets_advance_sequence_by_one_and_timestamp_by_samples() -> None:
    s = sender()
    p1 = s.packet(b"\xff" * 160, 160)
    p2 = s.packet(b"\xff" * 160, 160)
    p3 = s.packet(b"\xff" * 240, 240)
    assert [p.sequence for p in (p1, p2, p3)] == [1000, 1001, 1002]
    assert [p.timestamp for p in (p1, p2, p3)] == [50_000, 50_160, 50_320]
    assert {p.ssrc for p in (p1, p2, p3)} == {0xCAFEBABE}
    assert {p.payload_type for p in (p1, p2, p3)} == {0}
    assert (s.next_sequence, s.next_timestamp) == (1003, 50_560)
    assert (s.packets_sent, s.octets_sent) == (3, 560)
    assert RtpPacket.parse(bytes(p2)) == p2


def test_marker_on_stream_start_and_talkspurt_start_only() -> None:
    s = sender()
    assert s.packet(b"x", 160).marker  # first packet of the stream begins a talkspurt
    assert not s.packet(b"x", 160).marker
    assert s.packet(b"x", 160, talkspurt_start=True).marker
    assert not s.packet(b"x", 160).marker


def test_sequence_wraps_at_65535() -> None:
    s = sender(seq=65534)
    seqs = [s.packet(b"x", 160).sequence for _ in range(4)]
    assert seqs == [65534, 65535, 0, 1]
    assert s.next_sequence == 2


def test_timestamp_wraps_at_2_pow_32() -> None:
    s = sender(ts=2**32 - 320)
    stamps = [s.packet(b"x", 160).timestamp for _ in range(4)]
    assert stamps == [2**32 - 320, 2**32 - 160, 0, 160]
    s.skip(2**32 - 100)
    assert s.next_timestamp == 220


def test_skip_advances_timestamp_only_and_marks_next_packet() -> None:
    s = sender()
    s.packet(b"x", 160)
    s.packet(b"x", 160)
    s.skip(800)  # 100 ms of silence suppression
    p = s.packet(b"x", 160)
    assert p.sequence == 1002  # no gap in sequence numbers: nothing was lost
    assert p.timestamp == 50_000 + 320 + 800
    assert p.marker
    assert not s.packet(b"x", 160).marker


def test_skip_zero_does_not_mark_and_negative_is_rejected() -> None:
    s = sender()
    s.packet(b"x", 160)
    s.skip(0)
    assert not s.packet(b"x", 160).marker
    with pytest.raises(ValueError):
        s.skip(-1)
    with pytest.raises(ValueError):
        s.packet(b"x", -160)


def test_dtmf_shares_sequence_space_and_uses_current_timestamp() -> None:
    s = sender(seq=65530)
    audio = s.packet(b"\xff" * 160, 160)
    train = s.dtmf("5", payload_type=101)
    packets = [p for _, p in train]
    assert [p.sequence for p in packets] == [(65531 + i) & 0xFFFF for i in range(10)]
    assert {p.timestamp for p in packets} == {audio.timestamp + 160}
    assert {p.ssrc for p in packets} == {s.ssrc}
    assert {p.payload_type for p in packets} == {101}
    assert packets[0].marker
    assert TelephoneEvent.parse(packets[-1].payload) == TelephoneEvent(5, True, 10, 1280)
    assert s.next_sequence == (65531 + 10) & 0xFFFF
    assert s.next_timestamp == audio.timestamp + 160  # the caller skips the event's time
    assert (s.packets_sent, s.octets_sent) == (11, 160 + 4 * 10)
    s.skip(1280)
    after = s.packet(b"\xff" * 160, 160)
    assert after.sequence == s.next_sequence - 1 == 5
    assert after.timestamp == audio.timestamp + 160 + 1280
    assert after.marker


def test_dtmf_duration_and_invalid_digit() -> None:
    s = sender()
    train = s.dtmf("#", payload_type=96, duration_ms=100)
    assert TelephoneEvent.parse(train[-1][1].payload) == TelephoneEvent(11, True, 10, 800)
    seq = s.next_sequence
    with pytest.raises(ValueError):
        s.dtmf("Z", payload_type=96)
    assert s.next_sequence == seq  # nothing consumed on error


def test_wideband_clock_rate() -> None:
    s = RtpSender(97, clock_rate=16000, ssrc=1, rng=FixedRng(0, 0))  # e.g. L16/16000
    s.packet(b"x", 320)
    train = s.dtmf("1", payload_type=101)
    assert TelephoneEvent.parse(train[-1][1].payload) == TelephoneEvent(1, True, 10, 2560)


@pytest.mark.parametrize("pt", [-1, 128])
def test_payload_type_range(pt: int) -> None:
    with pytest.raises(ValueError):
        RtpSender(pt)


def test_packet_bytes_is_the_serialised_packet_and_advances_the_same() -> None:
    """The send hot path skips the RtpPacket; the wire bytes and the counters must not change."""
    a, b = sender(seq=0xFFFE, ts=0xFFFF_FF00), sender(seq=0xFFFE, ts=0xFFFF_FF00)
    steps: list[tuple[str, bool]] = [("send", False)] * 3 + [("skip", False), ("send", False)]
    steps += [("send", True), ("dtmf", False), ("send", False), ("send", False)]
    for op, talkspurt in steps:
        match op:
            case "send":
                payload = bytes(range(160))
                want = bytes(a.packet(payload, 160, talkspurt_start=talkspurt))
                assert b.packet_bytes(payload, 160, talkspurt) == want
            case "skip":
                a.skip(320)
                b.skip(320)
            case _:
                assert a.dtmf("1", 101) == b.dtmf("1", 101)
        assert (a.next_sequence, a.next_timestamp, a.packets_sent, a.octets_sent) == (
            b.next_sequence,
            b.next_timestamp,
            b.packets_sent,
            b.octets_sent,
        )
    with pytest.raises(ValueError, match="negative"):
        b.packet_bytes(b"", -1)
