"""SIP call flows against an in-process gateway over real UDP sockets, driven by hand-written
messages: late offer (INVITE without SDP), hold/resume re-INVITE, RTP inactivity timeout,
graceful shutdown (BYE to live calls, 503 to new ones). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from callbridge.gateway import Gateway, build_gateway
from callbridge.rtp.packet import RtpPacket
from callbridge.sdp.session import parse as parse_sdp
from callbridge.sip.message import SipRequest, SipResponse

from .gateways import echo_settings
from .phone import Phone, ended_future, headers, sdp


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
    # `agent` is the public name of the default route (echo here), as the README says.
    assert fields["call"] == f"sip:agent@{host}:{port}", fields
    assert "echo" in fields["routes"].split(",")
    if gw.http is not None:  # on loopback HTTP is on by default: the softphone's link
        assert fields["web"] == f"http://127.0.0.1:{gw.http.port}/", fields
    assert fields["data"] == str(tmp_path)  # where recordings and the database go


async def test_doctor_says_a_gateway_is_running_when_it_holds_the_sip_port(
    tmp_path: Path,
) -> None:
    from callbridge.cli import doctor

    settings = echo_settings(tmp_path, (43300, 43400))
    gw = build_gateway(settings)
    await gw.start()
    try:
        held = replace(settings, sip=replace(settings.sip, port=gw.sip.local_addr[1]))
        sip = await asyncio.to_thread(lambda: next(doctor.ports(held)))
    finally:
        await gw.stop()
    assert sip.status == "ok" and "a callbridge gateway is running here" in sip.what, sip
