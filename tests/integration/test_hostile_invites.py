"""Issue 9, D1/D2: INVITEs whose SDP once blew up memory or escaped the error handling, sent
over real UDP to an in-process gateway. Each gets a final answer at once, no RTP port stays
taken, and no task dies with an unretrieved exception."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from callbridge.gateway import Gateway
from callbridge.sip.message import SipResponse, parse

from .phone import Phone, ended_future, headers

# The defect measured 2.9 s and 2.2 GB for one D1 INVITE; the issue asks < 100 ms. The bound
# here leaves room for a loaded CI machine and still fails on the defect by a factor of six.
ANSWER_WITHIN_S = 0.5

BASE = "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
HOSTILE = {
    # D1: a telephone-event range that was expanded into a set of 30 million events.
    "fmtp_range": BASE
    + "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-30000000\r\n",
    # D2: OverflowError from round(float("9" * 400)).
    "ptime_overflow": BASE + "m=audio 40000 RTP/AVP 0\r\na=ptime:" + "9" * 400 + "\r\n",
    # D2: ValueError from int() past Python's 4,300-digit limit.
    "payload_type_digits": BASE + "m=audio 40000 RTP/AVP " + "1" * 4300 + " 0\r\n",
    "port_digits": BASE + "m=audio " + "4" * 4300 + " RTP/AVP 0\r\n",
    "rtpmap_clock": BASE + "m=audio 40000 RTP/AVP 96\r\na=rtpmap:96 PCMU/" + "8" * 5000 + "\r\n",
}


async def final_answer(phone: Phone, timeout: float) -> SipResponse:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            msg = parse(await loop.sock_recv(phone.sock, 65535))
            if isinstance(msg, SipResponse) and msg.status >= 200:
                return msg


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_sdp_gets_a_final_answer_at_once_and_leaks_nothing(
    name: str, gateway: Gateway, phone: Phone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dest = gateway.sip.local_addr
    ended = ended_future(gateway)
    body = HOSTILE[name].encode()
    started = time.monotonic()
    phone.send(
        headers(phone, gateway, "INVITE", 1, name) + "\nContent-Type: application/sdp", body, dest
    )
    resp = await final_answer(phone, timeout=5.0)
    elapsed = time.monotonic() - started
    assert elapsed < ANSWER_WITHIN_S, f"{name}: final answer after {elapsed * 1000:.0f} ms"
    tag = resp.to.tag or ""
    phone.send(headers(phone, gateway, "ACK", 1, name, tag), dest=dest)
    if resp.status == 200:  # an answerable offer (the D1 range, bounded): hang up
        phone.send(headers(phone, gateway, "BYE", 2, name, tag), dest=dest)
        await phone.recv("200")
        await asyncio.wait_for(ended, 5)
    else:
        assert resp.status in (400, 488), resp.status
    ports = gateway.sip.ports
    assert ports.free == len(range(ports.low, ports.high, 2)), "an RTP port pair stayed taken"
    assert not gateway.sip._legs
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def test_any_failure_while_setting_up_a_call_gets_500_and_frees_the_ports(
    gateway: Gateway, phone: Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    import callbridge.transports.sip.media as transport

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug nobody foresaw")

    monkeypatch.setattr(transport, "create_answer", broken)
    dest = gateway.sip.local_addr
    body = (BASE + "m=audio 40000 RTP/AVP 0\r\n").encode()
    phone.send(
        headers(phone, gateway, "INVITE", 1, "bug") + "\nContent-Type: application/sdp", body, dest
    )
    resp = await final_answer(phone, timeout=5.0)
    assert resp.status == 500
    ports = gateway.sip.ports
    assert ports.free == len(range(ports.low, ports.high, 2))
    assert not gateway.sip._legs
