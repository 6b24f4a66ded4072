"""RFC 4566 parse/serialise: golden fixtures, tolerance, helpers, errors, round-trip properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sdp.session import (
    Connection,
    MediaDescription,
    Origin,
    SdpParseError,
    SessionDescription,
    Timing,
    parse,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sdp"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.sdp"))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_fixtures_present() -> None:
    assert len(ALL_FIXTURES) >= 10


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_golden_round_trip_is_byte_exact(name: str) -> None:
    raw = load(name)
    sd = parse(raw)
    assert bytes(sd) == raw
    assert str(sd) == raw.decode()
    assert parse(str(sd)) == sd


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_lf_only_line_endings_parse_the_same(name: str) -> None:
    raw = load(name).decode()
    assert parse(raw.replace("\r\n", "\n")) == parse(raw)


def test_sipp_offer_fields() -> None:
    sd = parse(load("sipp_uac_pcap.sdp"))
    assert sd.version == 0
    assert sd.origin == Origin("user1", "53655765", 2353687637, "IN", "IP4", "192.0.2.10")
    assert sd.session_name == "-"
    assert sd.connection == Connection("192.0.2.10", "IN", "IP4")
    assert sd.timing == Timing(0, 0)
    (m,) = sd.media
    assert (m.media, m.port, m.proto, m.formats) == ("audio", 6000, "RTP/AVP", ("8", "101"))
    assert m.rtpmap(8) == ("PCMA", 8000, 1)
    assert m.rtpmap("101") == ("telephone-event", 8000, 1)
    assert m.fmtp(101) == "0-11,16"
    assert m.fmtp(8) is None
    assert m.ptime is None
    assert sd.media_direction(m) == "sendrecv"
    assert sd.media_connection(m) == sd.connection


def test_baresip_offer_details() -> None:
    sd = parse(load("baresip.sdp"))
    (m,) = sd.media
    assert m.bandwidths == (("AS", 128),)
    assert m.rtpmap(96) == ("opus", 48000, 2)
    assert m.fmtp(96) == "stereo=1;sprop-stereo=1"
    assert m.ptime == 20
    assert m.attribute("rtcp-rsize") == ""
    assert m.attribute("label") == "1"
    assert m.attribute("nonexistent") is None
    assert m.own_direction == "sendrecv"


def test_static_payload_types_without_rtpmap() -> None:
    sd = parse(load("linphone.sdp"))
    (m,) = sd.media
    assert m.rtpmap(0) == ("PCMU", 8000, 1)
    assert m.rtpmap(8) == ("PCMA", 8000, 1)
    assert m.rtpmap(18) == ("G729", 8000, 1)
    assert m.fmtp(18) == "annexb=yes"
    assert m.rtpmap(100) == ("telephone-event", 8000, 1)
    assert m.rtpmap(120) is None  # dynamic and unmapped
    assert sd.attribute("record") == "off"
    assert sd.session_name == "Talk"


def test_rtpmap_overrides_static_table() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ("0",), attributes=(("rtpmap", "0 FOO/16000/2"),))
    assert m.rtpmap(0) == ("FOO", 16000, 2)


def test_broken_rtpmap_is_none_not_an_exception() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ("97",), attributes=(("rtpmap", "97 opus"),))
    assert m.rtpmap(97) is None


def test_direction_media_level_overrides_session_level() -> None:
    sd = parse(load("hold_inactive.sdp"))
    assert sd.direction == "inactive"
    assert sd.media_direction(sd.media[0]) == "inactive"
    text = load("hold_inactive.sdp").decode().replace("a=rtpmap:101", "a=sendrecv\r\na=rtpmap:101")
    sd2 = parse(text)
    assert sd2.direction == "inactive"
    assert sd2.media_direction(sd2.media[0]) == "sendrecv"


def test_media_level_connection_overrides_session_level() -> None:
    text = (
        load("sipp_uac_pcap.sdp")
        .decode()
        .replace("RTP/AVP 8 101\r\n", "RTP/AVP 8 101\r\nc=IN IP4 198.51.100.1\r\n")
    )
    sd = parse(text)
    assert sd.media_connection(sd.media[0]) == Connection("198.51.100.1")
    assert bytes(sd) == text.encode()


def test_null_connection_detection() -> None:
    assert parse(load("hold_rfc2543.sdp")).connection == Connection("0.0.0.0")
    assert Connection("0.0.0.0").is_null
    assert Connection("::", addrtype="IP6").is_null
    assert not Connection("192.0.2.1").is_null


def test_ipv6_and_maxptime() -> None:
    sd = parse(load("te96_pcmu.sdp"))
    assert sd.origin.addrtype == "IP6"
    assert sd.connection == Connection("2001:db8::80", "IN", "IP6")
    assert sd.media[0].attribute("maxptime") == "40"


def test_unknown_and_optional_lines_are_kept() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=x\r\ni=info\r\nu=http://example.com\r\n"
        "e=a@example.com\r\nc=IN IP4 192.0.2.1\r\nb=CT:64\r\nt=0 0\r\nr=7d 1h 0 25h\r\n"
        "z=2882844526 -1h\r\nx=vendor thing\r\na=tool:test\r\n"
        "m=audio 5004/2 RTP/AVP 0\r\ni=audio info\r\nb=AS:64\r\nk=prompt\r\ny=other\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    )
    sd = parse(text)
    assert ("x", "vendor thing") in sd.extra
    assert sd.bandwidths == (("CT", 64),)
    assert sd.media[0].port_count == 2
    assert sd.media[0].extra == (("i", "audio info"), ("k", "prompt"), ("y", "other"))
    assert str(sd) == text


def test_missing_t_and_empty_s_are_tolerated() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0\n")
    assert sd.timing == Timing(0, 0)
    assert sd.session_name == "-"
    assert len(sd.media) == 1


def test_blank_and_trailing_lines_ignored() -> None:
    raw = load("sipp_uac_pcap.sdp") + b"\r\n\r\n"
    assert parse(raw) == parse(load("sipp_uac_pcap.sdp"))


def test_fractional_ptime_rounds() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ("0",), attributes=(("ptime", "20.0"),))
    assert m.ptime == 20
    assert (
        MediaDescription("audio", 1, "RTP/AVP", ("0",), attributes=(("ptime", "x"),)).ptime is None
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=0\r\ns=-\r\n", "missing o="),
        ("v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", "line 2: o= needs 6 fields"),
        ("v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n", "session version"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ngarbage\r\n", "line 3"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n", "m= needs"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n", "m= port"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n", "c= needs 3"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0\r\n", "t= needs"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nb=AS\r\n", "b= must be"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nb=AS:x\r\n", "bandwidth"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "duplicate o="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n", "after m="),
    ],
)
def test_malformed_sdp_raises_with_reason(text: str, fragment: str) -> None:
    with pytest.raises(SdpParseError, match=fragment):
        parse(text)


def test_non_utf8_bytes_raise_parse_error() -> None:
    with pytest.raises(SdpParseError, match="UTF-8"):
        parse(b"v=0\r\no=\xff 1 1 IN IP4 1.2.3.4\r\n")


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(SdpParseError, ValueError)


# --- properties ----------------------------------------------------------------------------

_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"),
    min_size=1,
    max_size=12,
)
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
    min_size=0,
    max_size=20,
).filter(lambda s: s.strip() == s)
_attr = st.tuples(_token, st.one_of(st.none(), _text))
_conn = st.builds(Connection, _token, _token, _token)


@st.composite
def _media(draw: st.DrawFn) -> MediaDescription:
    return MediaDescription(
        media=draw(_token),
        port=draw(st.integers(0, 65535)),
        proto=draw(_token),
        formats=tuple(draw(st.lists(_token, min_size=1, max_size=5))),
        connection=draw(st.one_of(st.none(), _conn)),
        attributes=tuple(draw(st.lists(_attr, max_size=5))),
        bandwidths=tuple(draw(st.lists(st.tuples(_token, st.integers(0, 10**9)), max_size=2))),
        port_count=draw(st.one_of(st.none(), st.integers(1, 8))),
        extra=tuple(draw(st.lists(st.tuples(st.sampled_from("xyz"), _text), max_size=2))),
    )


@st.composite
def _session(draw: st.DrawFn) -> SessionDescription:
    return SessionDescription(
        origin=Origin(
            draw(_token),
            draw(_token),
            draw(st.integers(0, 2**64)),
            draw(_token),
            draw(_token),
            draw(_token),
        ),
        session_name=draw(_text.filter(bool)),
        connection=draw(st.one_of(st.none(), _conn)),
        timing=Timing(draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))),
        attributes=tuple(draw(st.lists(_attr, max_size=5))),
        media=tuple(draw(st.lists(_media(), max_size=4))),
        bandwidths=tuple(draw(st.lists(st.tuples(_token, st.integers(0, 10**9)), max_size=2))),
        extra=tuple(draw(st.lists(st.tuples(st.sampled_from("xyz"), _text), max_size=2))),
    )


@settings(max_examples=100, deadline=None)
@given(_session())
def test_parse_of_serialised_is_identity(sd: SessionDescription) -> None:
    assert parse(str(sd)) == sd
    assert parse(bytes(sd)) == sd


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_fails_only_with_sdp_parse_error(data: str | bytes) -> None:
    try:
        sd = parse(data)
    except SdpParseError:
        return
    assert parse(str(sd)) == sd  # whatever we accept, we can re-emit


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(load("baresip.sdp").decode().split("\r\n")), max_size=25))
def test_shuffled_real_lines_fail_only_with_sdp_parse_error(lines: list[str]) -> None:
    try:
        sd = parse("v=0\r\n" + "\r\n".join(lines))
    except SdpParseError:
        return
    assert parse(bytes(sd)) == sd
