"""Acceptance 1: a SIPp UAC calls the gateway's echo agent with the bundled PCMA audio
(30 ms ptime) and RFC 4733 digits 1 2 #; the digits are reported once each, in order,
and what the gateway sends back is the caller's audio."""

from __future__ import annotations

import pytest

from .conftest import require_tools
from .peerlib import audio
from .peerlib.callbridge import CallbridgeProcess
from .peerlib.capture import read_rtp, rtp_to_pcm, start_capture
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import BUNDLED, start_uac

pytestmark = pytest.mark.peer


def test_sipp_pcma_echo_and_rfc4733_dtmf(
    registry: ProcessRegistry, gateway: CallbridgeProcess
) -> None:
    require_tools("sipp", "tshark")
    gw_host, gw_port = gateway.sip_addr
    rtp_lo, rtp_hi = gateway.config.rtp_range
    uac_sip = free_port()
    uac_mp, _ = PORT_BLOCKS.take(8)
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (port {gw_port} or port {uac_sip} or portrange {rtp_lo}-{rtp_hi} "
        f"or portrange {uac_mp}-{uac_mp + 7})",
    )
    uac = start_uac(
        registry, "uac", "uac_pcap_dtmf.xml", target=(gw_host, gw_port), service="echo",
        sip_port=uac_sip, media_port=uac_mp, timeout_s=40,
    )  # fmt: skip
    assert uac.wait(45) == 0, uac.describe()
    stats = uac.stats()
    assert stats.counter("SuccessfulCall(C)") == 1, stats.summary()
    assert stats.counter("Retransmissions(C)") == 0, stats.summary()

    # SIPp's Call-ID is "<call#>-<pid>@<local ip>" (its -cid_str default "%u-%p@%s").
    sip_call_id = f"1-{uac.proc.pid}@127.0.0.1"
    started = gateway.wait_for("call.started", timeout=5, sip_call_id=sip_call_id)
    assert len(started) == 1, started
    call = started[0]
    assert call.get("direction") == "inbound", call
    assert call.get("agent") == "echo", f"route 'echo' must reach the echo agent: {call}"
    call_id = call["call_id"]
    ended = gateway.wait_for("call.ended", timeout=10, call_id=call_id)
    assert len(ended) == 1, ended

    digits = [ev.get("digit") for ev in gateway.events("call.dtmf", call_id=call_id)]
    assert digits == ["1", "2", "#"], f"call.dtmf events: {digits}"

    pcap = cap.stop()
    # What the gateway sent to SIPp's media port (call 1 uses -mp itself).
    sent = read_rtp(
        pcap,
        f"udp.srcport >= {rtp_lo} && udp.srcport <= {rtp_hi} && udp.dstport == {uac_mp}",
    )
    assert sent, "no RTP from the gateway to the caller"
    pcma = [r for r in sent if r.pt == 8]
    assert len(pcma) >= 0.9 * len(sent), {r.pt for r in sent}
    assert len({r.ssrc for r in pcma}) == 1, "the echo stream changed SSRC"
    reference = rtp_to_pcm(read_rtp(BUNDLED / "g711a.pcap", "rtp.p_type == 8"), 8)
    echoed = rtp_to_pcm(pcma, 8)
    assert len(echoed) >= 0.9 * len(reference), (len(echoed), len(reference))
    sim = audio.compare(reference, echoed)
    print(f"echo vs g711a.pcap: {sim}")
    assert sim.ok(min_env=0.8, min_fine=0.8), f"echo does not contain the caller's audio: {sim}"

    end = ended[0]
    if "rtp_in" in end:
        assert int(end["rtp_in"]) >= 236, end  # 236 PCMA packets + the telephone-events
