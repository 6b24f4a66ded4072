"""RTCP: known bytes, compound round trips, §A.1/A.3/A.8 statistics, malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SenderStats,
    SourceDescription,
    UnknownRtcp,
    build_bye,
    build_report,
    ntp_from_unix,
    parse_compound,
    serialize_compound,
)

# --- known bytes ---------------------------------------------------------------------------

BLOCK = ReportBlock(
    ssrc=0x55667788,
    fraction_lost=13,
    cumulative_lost=5,
    highest_sequence=0x00010005,
    jitter=0x20,
    last_sr=0x7E800000,
    delay_since_last_sr=0x00010000,
)
BLOCK_BYTES = bytes.fromhex("55667788 0d000005 00010005 00000020 7e800000 00010000")

SR = SenderReport(
    ssrc=0x11223344,
    ntp_timestamp=0x83AA7E80_80000000,
    rtp_timestamp=0x1F40,
    packet_count=100,
    octet_count=16000,
    reports=(BLOCK,),
)
SR_BYTES = (
    bytes.fromhex("81c8000c 11223344 83aa7e80 80000000 00001f40 00000064 00003e80") + BLOCK_BYTES
)


def test_report_block_bytes() -> None:
    assert bytes(BLOCK) == BLOCK_BYTES
    assert ReportBlock.parse(BLOCK_BYTES, 0) == BLOCK


def test_sender_report_bytes() -> None:
    assert bytes(SR) == SR_BYTES
    assert parse_compound(SR_BYTES) == (SR,)


def test_empty_receiver_report_bytes() -> None:
    rr = ReceiverReport(0xDEADBEEF)
    assert bytes(rr) == bytes.fromhex("80c90001 deadbeef")
    assert parse_compound(bytes(rr)) == (rr,)


def test_sdes_cname_bytes() -> None:
    sdes = SourceDescription((SdesChunk(0x01020304, ((1, "ab"),)),))
    # chunk: SSRC, CNAME item (type 1, length 2, "ab"), END, padding to 32 bits
    assert bytes(sdes) == bytes.fromhex("81ca0003 01020304 01026162 00000000")
    assert parse_compound(bytes(sdes)) == (sdes,)
    assert sdes.chunks[0].cname == "ab"


def test_sdes_item_exactly_filling_a_word_still_gets_terminator() -> None:
    sdes = SourceDescription((SdesChunk(1, ((1, "abcdef"),)),))  # 2 + 6 = 8 octets of items
    data = bytes(sdes)
    assert data[-4:] == b"\x00\x00\x00\x00"
    assert len(data) % 4 == 0
    assert parse_compound(data) == (sdes,)


def test_bye_with_reason_bytes() -> None:
    bye = Bye((0x0A0B0C0D,), "bye")
    assert bytes(bye) == bytes.fromhex("81cb0002 0a0b0c0d 03627965")
    assert parse_compound(bytes(bye)) == (bye,)
    assert parse_compound(bytes(Bye((1, 2)))) == (Bye((1, 2)),)


def test_negative_cumulative_loss_is_signed_24_bit() -> None:
    block = ReportBlock(1, 0, -3, 10, 0)
    data = bytes(block)
    assert data[4:8] == bytes.fromhex("00fffffd")
    assert ReportBlock.parse(data, 0).cumulative_lost == -3
    # §6.4.1: saturate, do not wrap.
    assert ReportBlock.parse(bytes(ReportBlock(1, 0, 10**9, 0, 0)), 0).cumulative_lost == 0x7FFFFF
    assert (
        ReportBlock.parse(bytes(ReportBlock(1, 0, -(10**9), 0, 0)), 0).cumulative_lost == -0x800000
    )


def test_counts_wrap_in_sender_report() -> None:
    sr = SenderReport(1, 0, 0, 2**32 + 5, 2**32 + 7)
    parsed = parse_compound(bytes(sr))[0]
    assert isinstance(parsed, SenderReport)
    assert (parsed.packet_count, parsed.octet_count) == (5, 7)


def test_unknown_packet_types_are_carried() -> None:
    app = UnknownRtcp(204, 3, b"name\x00\x00\x00\x01")
    fb = UnknownRtcp(205, 1, struct.pack("!II", 1, 2))
    data = serialize_compound([ReceiverReport(1), app, fb])
    assert parse_compound(data) == (ReceiverReport(1), app, fb)


def test_profile_extension_kept() -> None:
    rr = ReceiverReport(1, (BLOCK,), extension=b"\x01\x02\x03\x04")
    assert parse_compound(bytes(rr)) == (rr,)


def test_padding_on_last_packet() -> None:
    rr = bytes(ReceiverReport(1))
    padded_bye = bytearray(bytes.fromhex("a1cb0002 00000009 00000004"))  # P bit, 4 padding octets
    assert parse_compound(rr + bytes(padded_bye)) == (ReceiverReport(1), Bye((9,)))


def test_serialise_refuses_more_than_31_blocks() -> None:
    with pytest.raises(ValueError, match="31"):
        bytes(ReceiverReport(1, tuple(ReportBlock(i, 0, 0, 0, 0) for i in range(32))))


# --- malformed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "shorter"),
        (b"\x80\xc9\x00", "shorter"),
        (bytes.fromhex("40c90001 00000001"), "version 1"),
        (bytes.fromhex("80c90002 00000001"), "overruns"),
        (bytes.fromhex("81c90001 00000001"), "report blocks do not fit"),
        (bytes.fromhex("80c80001 00000001"), "sender info"),
        (bytes.fromhex("80c90000"), "RR shorter"),
        (bytes.fromhex("81ca0001 00000001"), "not terminated"),
        (bytes.fromhex("81ca0002 00000001 01050000"), "item truncated"),
        (bytes.fromhex("82ca0001 00000001"), "not terminated"),
        (bytes.fromhex("83cb0001 00000001"), "BYE"),
        (bytes.fromhex("81cb0002 00000001 09616200"), "reason truncated"),
        (bytes.fromhex("80c90001 00000001 80"), "trailing"),
        (bytes.fromhex("a0c90001 00000001") + bytes(ReceiverReport(2)), "padding"),
        (bytes.fromhex("a0c90001 00000000"), "padding count 0"),
        (bytes.fromhex("a0c90001 00000009"), "padding count 9"),
    ],
)
def test_malformed_raises_parse_error(data: bytes, fragment: str) -> None:
    with pytest.raises(RtcpParseError, match=fragment):
        parse_compound(data)


def test_parse_error_is_value_error() -> None:
    assert issubclass(RtcpParseError, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except RtcpParseError:
        return
    assert all(isinstance(p, RtcpPacket) for p in packets)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 63),  # P and count bits
            st.sampled_from([200, 201, 202, 203, 204, 205]),
            st.binary(max_size=60).map(lambda b: b + b"\x00" * (-len(b) % 4)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_well_framed_random_bodies(parts: list[tuple[int, int, bytes]]) -> None:
    data = b"".join(
        struct.pack("!BBH", 0x80 | bits, pt, len(body) // 4) + body for bits, pt, body in parts
    )
    try:
        packets = parse_compound(data)
    except RtcpParseError:
        return
    assert len(packets) == len(parts)
    # Re-serialising what we parsed must not fail either (with SDES text normalised).
    parse_compound(serialize_compound(packets))


_u32 = st.integers(0, 2**32 - 1)
_block = st.builds(
    ReportBlock,
    _u32,
    st.integers(0, 255),
    st.integers(-0x800000, 0x7FFFFF),
    _u32,
    _u32,
    _u32,
    _u32,
)
_packet = st.one_of(
    st.builds(
        SenderReport,
        _u32,
        st.integers(0, 2**64 - 1),
        _u32,
        _u32,
        _u32,
        st.lists(_block, max_size=3).map(tuple),
    ),
    st.builds(ReceiverReport, _u32, st.lists(_block, max_size=3).map(tuple)),
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                _u32,
                st.lists(st.tuples(st.integers(1, 8), st.text(max_size=30)), max_size=3).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(
        Bye, st.lists(_u32, max_size=4).map(tuple), st.one_of(st.none(), st.text(max_size=40))
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_packet, min_size=1, max_size=4))
def test_parse_of_serialise_is_identity(packets: list[RtcpPacket]) -> None:
    assert parse_compound(serialize_compound(packets)) == tuple(packets)


# --- reception statistics ------------------------------------------------------------------


def run_stream(
    stats: ReceptionStats,
    count: int,
    *,
    first_seq: int = 0,
    first_ts: int = 0,
    drop: set[int] = frozenset(),  # type: ignore[assignment]
    delay: float = 0.05,
) -> None:
    for i in range(count):
        if i in drop:
            continue
        stats.update((first_seq + i) & 0xFFFF, (first_ts + 160 * i) & 0xFFFFFFFF, i * 0.02 + delay)


def test_clean_stream_has_no_loss_and_zero_jitter() -> None:
    stats = ReceptionStats(0xABC)
    run_stream(stats, 500, first_seq=1000)
    block = stats.report_block(now=10.0)
    assert block.ssrc == 0xABC
    assert block.fraction_lost == 0
    assert block.cumulative_lost == 0
    assert block.jitter == 0
    assert block.highest_sequence == 1499
    assert stats.expected == stats.received == 499  # §A.1 probation: the first packet validates


def test_five_percent_loss() -> None:
    stats = ReceptionStats(1)
    run_stream(stats, 1001, drop={i for i in range(1001) if i % 20 == 10})
    block = stats.report_block(now=30.0)
    assert block.cumulative_lost == 50
    # §A.3: (50 << 8) // 1000 = 12, i.e. the 5 % loss reads as 12/256 (12.8 truncated).
    assert block.fraction_lost == (50 << 8) // 1000 == 12
    assert 12 <= block.fraction_lost <= 13


def test_fraction_lost_is_per_interval() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    run_stream(stats, 100, drop={50, 51, 52, 53})
    first = stats.report_block(now=2.0)
    assert first.fraction_lost == (4 << 8) // 100
    for i in range(100, 200):
        stats.update(i, 160 * i, i * 0.02 + 0.05)
    second = stats.report_block(now=4.0)
    assert second.fraction_lost == 0
    assert second.cumulative_lost == 4


def test_sequence_wrap_counts_cycles() -> None:
    stats = ReceptionStats(1)
    run_stream(stats, 100, first_seq=65500)
    assert stats.extended_highest_sequence == (1 << 16) + (65500 + 99 - 65536)
    assert stats.lost == 0
    assert stats.report_block(now=1.0).highest_sequence == 65599


def test_duplicates_make_cumulative_loss_negative() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    for seq in [1, 2, 3, 3, 3, 4]:
        stats.update(seq, seq * 160, seq * 0.02)
    assert stats.lost == -2
    assert stats.report_block(now=1.0).cumulative_lost == -2


def test_reordered_packet_within_misorder_window_counts() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    for seq in [10, 11, 13, 12, 14]:
        assert stats.update(seq, seq * 160, seq * 0.02)
    assert stats.lost == 0
    assert stats.extended_highest_sequence == 14


def test_probation_rejects_a_lone_packet() -> None:
    stats = ReceptionStats(1)
    assert not stats.update(500, 0, 0.0)
    assert not stats.update(9000, 0, 0.02)  # not in sequence: probation restarts
    assert stats.update(9001, 160, 0.04)
    assert stats.received == 1
    assert stats.heard_since_report


def test_source_restart_after_big_jump() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    run_stream(stats, 10, first_seq=100)
    assert not stats.update(30000, 0, 1.0)  # a jump: held back as possibly bad
    assert stats.update(30001, 160, 1.02)  # confirmed: §A.1 re-initialises
    assert stats.received == 1
    assert stats.extended_highest_sequence == 30001


def test_jitter_converges_to_constant_delay_variation() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    for i in range(600):
        # transit alternates 0 and 10 ms → |D| = 80 timestamp units every packet
        stats.update(i, 160 * i, i * 0.02 + (0.01 if i % 2 else 0.0))
    assert stats.jitter == pytest.approx(80, abs=0.5)
    assert stats.report_block(now=20.0).jitter in (79, 80)


def test_jitter_ignores_rtp_timestamp_wrap() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    run_stream(stats, 200, first_ts=2**32 - 160 * 100)
    assert stats.jitter == pytest.approx(0, abs=1e-6)


def test_lsr_and_dlsr() -> None:
    stats = ReceptionStats(1, min_sequential=0)
    run_stream(stats, 10)
    assert stats.report_block(now=1.0).last_sr == 0
    stats.on_sender_report(0x83AA7E80_12345678, now=5.0)
    block = stats.report_block(now=5.5)
    assert block.last_sr == 0x7E801234  # middle 32 bits of the NTP timestamp
    assert block.delay_since_last_sr == 32768  # 0.5 s in 1/65536 s


# --- sender statistics and report building -------------------------------------------------


def test_sender_stats_counts_and_rtp_ntp_mapping() -> None:
    ss = SenderStats(0x42)
    for i in range(50):
        ss.on_sent(RtpPacket(0, i, 1000 + 160 * i, 0x42, b"\x00" * 160), now=100.0 + 0.02 * i)
    assert (ss.packet_count, ss.octet_count) == (50, 8000)
    # 10 ms after the last packet the media clock has moved 80 units further.
    assert ss.rtp_timestamp_at(100.0 + 0.02 * 49 + 0.01) == 1000 + 160 * 49 + 80
    sr = ss.sender_report(now=101.0, ntp_time=ntp_from_unix(0.5))
    assert sr.ntp_timestamp == (2_208_988_800 << 32) | (1 << 31)
    assert (sr.packet_count, sr.octet_count) == (50, 8000)
    assert not ss.sent_since_report


def test_rtp_timestamp_before_anything_sent() -> None:
    assert SenderStats(1).rtp_timestamp_at(5.0) == 0


def test_build_report_sr_then_rr() -> None:
    ss = SenderStats(0x42)
    rs = ReceptionStats(0x99, min_sequential=0)
    ss.on_sent(RtpPacket(0, 1, 160, 0x42, b"\x00" * 160), now=1.0)
    run_stream(rs, 20)
    first = parse_compound(
        build_report(0x42, "cb@host", now=1.0, ntp_time=3.9e9, sender=ss, receptions=[rs])
    )
    assert isinstance(first[0], SenderReport)
    assert first[0].ssrc == 0x42
    assert [b.ssrc for b in first[0].reports] == [0x99]
    assert isinstance(first[1], SourceDescription)
    assert first[1].chunks[0] == SdesChunk(0x42, ((1, "cb@host"),))
    # Nothing sent and nothing heard since: an empty RR plus SDES.
    second = parse_compound(
        build_report(0x42, "cb@host", now=6.0, ntp_time=3.9e9 + 5, sender=ss, receptions=[rs])
    )
    assert second == (
        ReceiverReport(0x42),
        SourceDescription((SdesChunk(0x42, ((1, "cb@host"),)),)),
    )


def test_build_report_splits_more_than_31_sources() -> None:
    sources = [ReceptionStats(i, min_sequential=0) for i in range(40)]
    for s in sources:
        s.update(1, 0, 0.0)
    packets = parse_compound(build_report(7, "x", now=1.0, ntp_time=0.0, receptions=sources))
    assert [type(p) for p in packets] == [ReceiverReport, ReceiverReport, SourceDescription]
    first, extra = packets[0], packets[1]
    assert isinstance(first, ReceiverReport) and isinstance(extra, ReceiverReport)
    assert len(first.reports) == 31 and len(extra.reports) == 9


def test_build_bye_is_a_compound_packet() -> None:
    packets = parse_compound(build_bye(5, "me", "hangup"))
    assert packets == (
        ReceiverReport(5),
        SourceDescription((SdesChunk(5, ((1, "me"),)),)),
        Bye((5,), "hangup"),
    )


def test_padded_opaque_body_reserialises_with_padding() -> None:
    data = bytes.fromhex("80c90001 00000001 a1cc0001 61626301")  # RR, then APP with 1 pad octet
    packets = parse_compound(data)
    assert packets[1] == UnknownRtcp(204, 1, b"abc")
    assert serialize_compound(packets) == data
