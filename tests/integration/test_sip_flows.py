"""SIP call flows against an in-process gateway over real UDP sockets, driven by hand-written
messages: late offer (INVITE without SDP), hold/resume re-INVITE, RTP inactivity timeout,
graceful shutdown (BYE to live calls, 503 to new ones). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from callbridge.app import Gateway, build_gateway
from callbridge.calls.manager import Call
from callbridge.config.settings import load_settings
from callbridge.rtp.packet import RtpPacket
from callbridge.sdp.session import parse as parse_sdp
from callbridge.sip.message import SipRequest, SipResponse, parse

from .gateways import echo_settings


class Phone:
    """A minimal UDP SIP endpoint for tests: send text, await parsed messages."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.rtp_port = self.rtp.getsockname()[1]

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def send(self, text: str, body: bytes = b"", dest: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        head = text.strip("\n").replace("\n", "\r\n")
        data = head.encode() + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        self.sock.sendto(data, dest)

    async def recv(self, want: str, timeout: float = 5.0) -> SipRequest | SipResponse:
        """Next message whose start matches `want` ("200", "BYE", ...); others are skipped."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(self.sock, 65535)
                msg = parse(data)
                key = msg.method if isinstance(msg, SipRequest) else str(msg.status)
                if key == want:
                    return msg

    async def recv_rtp(self, timeout: float = 5.0) -> RtpPacket:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return RtpPacket.parse(await loop.sock_recv(self.rtp, 2048))


def sdp(port: int, direction: str = "sendrecv", host: str = "127.0.0.1") -> bytes:
    return (
        f"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a={direction}\r\n"
    ).encode()


def headers(
    phone: Phone,
    gw: Gateway,
    method: str,
    cseq: int,
    call_id: str,
    to_tag: str = "",
    branch: str = "",
) -> str:
    host, port = gw.sip.local_addr
    to = f"<sip:echo@{host}:{port}>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:echo@{host}:{port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{branch or method + str(cseq)}{call_id}\n"
        f"From: <sip:phone@127.0.0.1:{phone.port}>;tag=ph\n"
        f"To: {to}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n"
        f"Contact: <sip:phone@127.0.0.1:{phone.port}>\nMax-Forwards: 70"
    )


@pytest.fixture
async def gateway(tmp_path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    s = load_settings(environ={})
    s = replace(
        s,
        data_dir=str(tmp_path),
        default_agent="echo",  # these tests need no speech models
        shutdown_grace=3.0,
        sip=replace(s.sip, host="127.0.0.1", port=0),
        rtp=replace(s.rtp, port_min=43000, port_max=43200, timeout=1.0),
    )
    gw = build_gateway(s)
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
def phone() -> AsyncIterator[Phone]:  # type: ignore[misc]
    p = Phone()
    yield p
    p.close()


def ended_future(gw: Gateway) -> asyncio.Future[Call]:
    fut: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    gw.calls.on_end.append(lambda c: None if fut.done() else fut.set_result(c))
    return fut


async def test_invite_without_sdp_gets_an_offer_and_the_ack_answers(
    gateway: Gateway, phone: Phone
) -> None:
    dest = gateway.sip.local_addr
    ended = ended_future(gateway)
    phone.send(headers(phone, gateway, "INVITE", 1, "late1"), dest=dest)
    ok = await phone.recv("200")
    assert isinstance(ok, SipResponse)
    offer = parse_sdp(ok.body)
    assert offer.media[0].port > 0
    tag = ok.to.tag or ""
    phone.send(
        headers(phone, gateway, "ACK", 1, "late1", tag) + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    # Media flows to the address from our answer in the ACK: send a packet, get the echo.
    gw_rtp = ("127.0.0.1", offer.media[0].port)
    for seq in range(10):
        phone.rtp.sendto(bytes(RtpPacket(0, seq, seq * 160, 0x1234, b"\x55" * 160)), gw_rtp)
    pkt = await phone.recv_rtp()
    assert pkt.payload_type == 0
    phone.send(headers(phone, gateway, "BYE", 2, "late1", tag), dest=dest)
    assert (await phone.recv("200")).cseq.method == "BYE"
    call = await asyncio.wait_for(ended, 5)
    assert call.leg.end_reason == "remote_bye"


async def test_hold_resume_and_rtp_timeout(gateway: Gateway, phone: Phone) -> None:
    dest = gateway.sip.local_addr
    ended = ended_future(gateway)
    phone.send(
        headers(phone, gateway, "INVITE", 1, "hold1") + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    ok = await phone.recv("200")
    tag = ok.to.tag or ""
    phone.send(headers(phone, gateway, "ACK", 1, "hold1", tag), dest=dest)
    # Hold: a=sendonly from us -> callbridge answers recvonly (RFC 3264 §6.1).
    phone.send(
        headers(phone, gateway, "INVITE", 2, "hold1", tag) + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port, "sendonly"),
        dest=dest,
    )
    ok2 = await phone.recv("200")
    d2 = parse_sdp(ok2.body)
    assert d2.media_direction(d2.media[0]) == "recvonly"
    phone.send(headers(phone, gateway, "ACK", 2, "hold1", tag), dest=dest)
    # Resume: sendrecv again.
    phone.send(
        headers(phone, gateway, "INVITE", 3, "hold1", tag) + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    ok3 = await phone.recv("200")
    d3 = parse_sdp(ok3.body)
    assert d3.media_direction(d3.media[0]) == "sendrecv"
    phone.send(headers(phone, gateway, "ACK", 3, "hold1", tag), dest=dest)
    # No RTP at all: the 1 s inactivity timeout ends the call with a BYE from callbridge.
    bye = await phone.recv("BYE", timeout=5)
    assert isinstance(bye, SipRequest)
    phone.send(
        f"SIP/2.0 200 OK\nVia: {bye.headers.get('Via')}\nFrom: {bye.headers.get('From')}\n"
        f"To: {bye.headers.get('To')}\nCall-ID: {bye.call_id}\nCSeq: {bye.cseq}",
        dest=dest,
    )
    call = await asyncio.wait_for(ended, 5)
    assert call.leg.end_reason == "rtp_timeout"


async def test_shutdown_byes_live_calls_and_refuses_new_ones(
    gateway: Gateway, phone: Phone
) -> None:
    dest = gateway.sip.local_addr
    phone.send(
        headers(phone, gateway, "INVITE", 1, "shut1") + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    ok = await phone.recv("200")
    tag = ok.to.tag or ""
    phone.send(headers(phone, gateway, "ACK", 1, "shut1", tag), dest=dest)
    stopping = asyncio.create_task(gateway.stop())
    bye = await phone.recv("BYE")
    assert isinstance(bye, SipRequest) and bye.call_id == "shut1"
    phone.send(
        headers(phone, gateway, "INVITE", 1, "shut2") + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    refused = await phone.recv("503")
    assert refused.call_id == "shut2"
    phone.send(
        f"SIP/2.0 200 OK\nVia: {bye.headers.get('Via')}\nFrom: {bye.headers.get('From')}\n"
        f"To: {bye.headers.get('To')}\nCall-ID: {bye.call_id}\nCSeq: {bye.cseq}",
        dest=dest,
    )
    await asyncio.wait_for(stopping, 5)
    assert gateway.calls.calls == {}


async def test_unknown_user_404_and_no_common_codec_488(gateway: Gateway, phone: Phone) -> None:
    dest = gateway.sip.local_addr
    text = headers(phone, gateway, "INVITE", 1, "nf1").replace("sip:echo@", "sip:nobody@")
    phone.send(text + "\nContent-Type: application/sdp", sdp(phone.rtp_port), dest=dest)
    assert (await phone.recv("404")).call_id == "nf1"
    g729 = (
        sdp(phone.rtp_port)
        .replace(b"RTP/AVP 0 101", b"RTP/AVP 18")
        .replace(b"a=rtpmap:0 PCMU/8000\r\n", b"")
    )
    phone.send(
        headers(phone, gateway, "INVITE", 1, "nc1") + "\nContent-Type: application/sdp",
        g729,
        dest=dest,
    )
    assert (await phone.recv("488")).call_id == "nc1"


async def test_reinvite_moves_media_to_the_new_address(gateway: Gateway, phone: Phone) -> None:
    dest = gateway.sip.local_addr
    ended = ended_future(gateway)
    phone.send(
        headers(phone, gateway, "INVITE", 1, "move1") + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    ok = await phone.recv("200")
    tag = ok.to.tag or ""
    gw_rtp = ("127.0.0.1", parse_sdp(ok.body).media[0].port)
    phone.send(headers(phone, gateway, "ACK", 1, "move1", tag), dest=dest)
    phone.rtp.sendto(bytes(RtpPacket(0, 1, 160, 0x99, b"\x55" * 160)), gw_rtp)
    await phone.recv_rtp()  # echo arrives at the first address
    # The phone moves its media to a new socket (e.g. a network change) with a re-INVITE.
    new_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new_rtp.bind(("127.0.0.1", 0))
    new_rtp.setblocking(False)
    try:
        port2 = new_rtp.getsockname()[1]
        phone.send(
            headers(phone, gateway, "INVITE", 2, "move1", tag) + "\nContent-Type: application/sdp",
            sdp(port2),
            dest=dest,
        )
        await phone.recv("200")
        phone.send(headers(phone, gateway, "ACK", 2, "move1", tag), dest=dest)
        loop = asyncio.get_running_loop()
        for seq in range(2, 60):
            new_rtp.sendto(bytes(RtpPacket(0, seq, seq * 160, 0x99, b"\x55" * 160)), gw_rtp)
        async with asyncio.timeout(5):
            pkt = RtpPacket.parse(await loop.sock_recv(new_rtp, 2048))
        assert pkt.payload_type == 0
    finally:
        new_rtp.close()
    phone.send(headers(phone, gateway, "BYE", 3, "move1", tag), dest=dest)
    await phone.recv("200")
    await asyncio.wait_for(ended, 5)


async def test_a_peer_that_never_answers_our_bye_does_not_hold_the_call(
    gateway: Gateway, phone: Phone
) -> None:
    """RFC 3261 §15.1.1: the session is over once our BYE is sent; a dead peer (no answer,
    64*T1 = 32 s of BYE retransmissions) must not keep the call, its media or its recording."""
    dest = gateway.sip.local_addr
    ended = ended_future(gateway)
    phone.send(
        headers(phone, gateway, "INVITE", 1, "dead1") + "\nContent-Type: application/sdp",
        sdp(phone.rtp_port),
        dest=dest,
    )
    ok = await phone.recv("200")
    phone.send(headers(phone, gateway, "ACK", 1, "dead1", ok.to.tag or ""), dest=dest)
    (call,) = gateway.calls.calls.values()
    hanging_up = asyncio.create_task(call.leg.hangup("api"))
    assert isinstance(await phone.recv("BYE", timeout=5), SipRequest)  # never answered
    done = await asyncio.wait_for(ended, 2)
    assert done.leg.end_reason == "api"
    await asyncio.wait_for(hanging_up, 2)
    assert isinstance(await phone.recv("BYE", timeout=2), SipRequest)  # still retransmitted


async def test_the_ready_line_says_where_to_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = build_gateway(echo_settings(tmp_path, (43300, 43400)))
    with caplog.at_level(logging.INFO, logger="callbridge"):
        await gw.start()
        await gw.stop()
    (ready,) = [r for r in caplog.records if r.getMessage() == "gateway.ready"]
    fields = ready.fields  # type: ignore[attr-defined]
    host, port = gw.sip.local_addr
    assert fields["call"] == f"sip:echo@{host}:{port}", fields
    assert "echo" in fields["routes"].split(",") and "api" not in fields
