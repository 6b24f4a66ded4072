"""Seed corpora and one property check per wire parser, shared by the hypothesis tests
(tests/unit/fuzz/test_parsers_total.py) and the long fuzz run (bench/fuzz_parsers.py).

A check takes one input and returns whether it was accepted. Only the parser's own error class
counts as a rejection; a property that fails for accepted input raises AssertionError (explicitly,
so `python -O` keeps it), and anything else escapes: both callers treat that as a failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from callbridge.rtp.dtmf import DtmfReceiver, TelephoneEvent, dtmf_packets
from callbridge.rtp.packet import RtpPacket, RtpParseError
from callbridge.rtp.rtcp import (
    ReceptionStats,
    RtcpParseError,
    SenderStats,
    build_bye,
    build_report,
    parse_compound,
)
from callbridge.sdp import (
    LocalMedia,
    SdpError,
    SdpParseError,
    apply_answer,
    create_answer,
    create_offer,
)
from callbridge.sdp import parse as parse_sdp
from callbridge.sdp.session import MAX_SDP_BYTES
from callbridge.sip.message import MAX_MESSAGE_BYTES as SIP_MAX_MESSAGE_BYTES
from callbridge.sip.message import SipParseError, SipRequest
from callbridge.sip.message import parse as parse_sip
from callbridge.sip.uri import UriParseError
from callbridge.twilio_streams.messages import (
    MessageError,
    dumps,
    parse_from_app,
    parse_from_twilio,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TWILIO_GOLDEN = Path(__file__).resolve().parents[1] / "twilio_streams" / "golden"

# --- seed corpora: golden messages and packets our own builders emit -------------------------


def _files(folder: Path, pattern: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob(pattern))]


def sip_seeds() -> list[bytes]:
    return _files(FIXTURES / "sip-messages", "*.sip") + _files(FIXTURES / "sip-torture", "*.dat")


def sdp_seeds() -> list[bytes]:
    return _files(FIXTURES / "sdp", "*.sdp")


def twilio_seeds() -> list[bytes]:
    return _files(TWILIO_GOLDEN, "*.json")


def rtp_seeds() -> list[bytes]:
    seeds = [
        bytes(RtpPacket(0, 1, 160, 0x1234, b"\xff" * 160)),
        bytes(RtpPacket(8, 65535, 2**32 - 1, 7, b"\xd5" * 20, marker=True, csrcs=(1, 2, 3))),
        # Header extension (RFC 3550 §5.3.1) and padding (§5.1), built by hand.
        b"\x90\x00\x00\x01\x00\x00\x00\xa0\x00\x00\x00\x01\xbe\xde\x00\x01abcd" + b"\x00" * 20,
        b"\xa0\x00\x00\x01\x00\x00\x00\xa0\x00\x00\x00\x01" + b"\x7f" * 17 + b"\x00\x00\x03",
    ]
    return seeds + dtmf_seeds()


def dtmf_seeds() -> list[bytes]:
    out: list[bytes] = []
    for digit in "5#D":
        packets = dtmf_packets(digit, payload_type=101, ssrc=9, first_sequence=100, timestamp=8000)
        out += [bytes(p) for _, p in packets]
    return out


def rtcp_seeds() -> list[bytes]:
    sender = SenderStats(0x1111)
    sender.on_sent(RtpPacket(0, 1, 160, 0x1111, b"\x00" * 160), 1.0)
    rxs = [ReceptionStats(0x2222 + k, min_sequential=0) for k in range(3)]
    for rx in rxs:
        for i in range(10):
            rx.update(i, i * 160, 1.0 + i * 0.02)
    return [
        build_report(
            0x1111, "cname@example", now=2.0, ntp_time=3.9e9, sender=sender, receptions=rxs
        ),
        build_report(0x1111, "c", now=2.0, ntp_time=3.9e9),
        build_bye(0x1111, "c", "bye now"),
        b"\x81\xcc\x00\x02abcdname",  # APP: carried, not interpreted
    ]


# --- checks: True (accepted) / False (the parser's own error) / AssertionError ----------------


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def check_sip(data: bytes) -> bool:
    try:
        message = parse_sip(data)
    except SipParseError:
        return False
    # What the parser accepted, the typed accessors read or refuse with the parser's errors.
    accessors: list[Callable[[], object]] = [
        lambda: message.call_id,
        lambda: message.cseq,
        lambda: message.vias,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.contacts,
        lambda: message.content_type,
    ]
    if isinstance(message, SipRequest):
        accessors += [lambda: message.max_forwards, lambda: message.request_uri]
    for read in accessors:
        with contextlib.suppress(SipParseError, UriParseError):
            read()
    # Serialising adds the Content-Length a datagram may lack; otherwise it reads back the same
    # (unless that header pushed a message at the size cap over it: the cap is for datagrams).
    wire = bytes(message)
    if len(wire) > SIP_MAX_MESSAGE_BYTES:
        return True
    again = parse_sip(wire)
    _require(
        replace(again, headers=again.headers.remove("Content-Length"))
        == replace(message, headers=message.headers.remove("Content-Length")),
        "parse(bytes(message)) differs from message",
    )
    return True


def check_sdp(data: bytes) -> bool:
    try:
        sd = parse_sdp(data)
    except SdpParseError:
        return False
    for m in sd.media:
        m.rtpmaps()
        _ = m.ptime, m.fmtp(101), m.rtpmap(0)
    # Re-emitted lines take RFC 4566 §5's order, so one round trip reaches a fixpoint.
    again = parse_sdp(bytes(sd))
    _require(parse_sdp(bytes(again)) == again, "parse(bytes(sd)) is no fixpoint")
    return True


LOCAL = LocalMedia("203.0.113.5", 40000, session_id=4242)
OUR_OFFER = create_offer(LOCAL)


def check_offer_answer(data: bytes) -> bool:
    """What the SIP transport does with a peer's SDP: only SdpError may escape the negotiation.

    Accepted means an answer was made; an offer we cannot answer is a rejection.
    """
    try:
        sd = parse_sdp(data)
    except SdpParseError:
        return False
    accepted = False
    try:
        answer, plan = create_answer(sd, LOCAL)
    except SdpError:
        pass
    else:
        accepted = True
        encoded = bytes(answer)
        _require(len(answer.media) == len(sd.media), "answer m= count differs")  # RFC 3264 §6
        _require(plan.ptime > 0, "the media plan has no ptime")
        if len(encoded) <= MAX_SDP_BYTES:
            _require(parse_sdp(encoded) == answer, "parse(bytes(answer)) differs from answer")
    with contextlib.suppress(SdpError):
        apply_answer(OUR_OFFER, sd)
    return accepted


def check_rtp(data: bytes) -> bool:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return False
    _require(RtpPacket.parse(bytes(packet)) == packet, "parse(bytes(packet)) differs")
    return True


def check_rtcp(data: bytes) -> bool:
    try:
        parse_compound(data)
    except RtcpParseError:
        return False
    return True


def check_dtmf(data: bytes, receiver: DtmfReceiver, now: float, poll_delay: float = 0.0) -> bool:
    """One datagram into a long-lived receiver; accepted means it carries a telephone event.

    The receiver is polled `poll_delay` seconds after the packet: 0 leaves an event open for
    the next packet to continue or end, more than its end timeout ends it as if its end
    packets were lost.
    """
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return False
    receiver.receive(packet, now)
    receiver.poll(now + poll_delay)
    return TelephoneEvent.parse(packet.payload) is not None


def _check_twilio_text(text: str) -> bool:
    accepted = False
    try:
        msg = parse_from_twilio(text)
    except MessageError:
        pass
    else:
        accepted = True
        _require(parse_from_twilio(dumps(msg)) == msg, "parse(dumps(msg)) differs from msg")
    try:
        parse_from_app(text)
    except MessageError:
        return accepted
    return True


def check_twilio(data: bytes) -> bool:
    """Accepted means a text frame of these bytes parses as either side's message."""
    # A WebSocket text frame is UTF-8, so that decoding decides acceptance; Latin-1 puts every
    # byte value in front of the parsers as well.
    accepted = _check_twilio_text(data.decode("utf-8", "replace"))
    _check_twilio_text(data.decode("latin-1"))
    try:
        parse_from_twilio(data)
    except MessageError:
        return accepted
    raise AssertionError("a binary frame was accepted")
