"""Acceptance 2 (issue 5): an outbound call through a trunk that challenges INVITE with 407.

An in-process SIP transport calls a number through the account "trunk" (a SIPp UAS): SIPp
answers the first INVITE with 407, callbridge ACKs it and resends the INVITE with
Proxy-Authorization (checked against the password from SIPp's own message log), SIPp
answers and plays a spoken prompt, the echo agent speaks it back, and what reached SIPp's
media port is that speech (captured with tshark), not silence.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from callbridge.agents.echo import EchoAgent
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.asyncio_clock import LoopClock
from callbridge.sip.digest import digest_response
from callbridge.sip.registration import SipAccount
from callbridge.transports.sip.transport import SipTransport, SipTransportConfig

from .conftest import require_tools
from .peerlib import audio
from .peerlib.capture import read_rtp, rtp_to_pcm, start_capture
from .peerlib.inprocess import wait_for
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uas
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

PROMPT = "You are calling through an authenticated trunk. This is the test prompt."
PASSWORD = "trunk-pass-42"


def _invites(messages: str) -> list[str]:
    """The INVITEs SIPp received, as text (its -trace_msg log)."""
    return [m.group(0) for m in re.finditer(r"^INVITE .*?(?=\n\s*\n)", messages, re.M | re.S)]


async def test_invite_407_is_answered_and_the_agent_is_heard(
    registry: ProcessRegistry, tmp_path: Path
) -> None:
    require_tools("sipp", "tshark", "espeak-ng", "sox")
    prompt_wav = audio.synthesize_speech(PROMPT, tmp_path / "prompt.wav")
    prompt = audio.read_wav(prompt_wav)
    media = tmp_path / "media.pcap"
    wav_to_pcap(prompt_wav, media, codec="pcmu")

    uas_sip, our_sip = free_port(), free_port()
    uas_mp, _ = PORT_BLOCKS.take(8)
    rtp_lo, rtp_hi = PORT_BLOCKS.take(40)
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (port {uas_sip} or port {our_sip} or portrange {rtp_lo}-{rtp_hi} "
        f"or portrange {uas_mp}-{uas_mp + 7})",
    )
    uas = start_uas(
        registry, "trunk", "uas_auth_play.xml", sip_port=uas_sip, media_port=uas_mp,
        timeout_s=60, files={"media.pcap": media},
    )  # fmt: skip
    trunk = SipAccount(
        "trunk", f"127.0.0.1:{uas_sip}", "alice", PASSWORD, domain="trunk.test",
        auth_username="alice-auth", register=False,
    )  # fmt: skip
    clock = LoopClock()
    calls = CallManager(Router({"echo": EchoAgent}, "echo"), clock)
    transport = SipTransport(
        SipTransportConfig(
            host="127.0.0.1", port=our_sip, rtp_port_min=rtp_lo, rtp_port_max=rtp_hi,
            accounts=(trunk,),
        ),
        clock,
        calls,
    )  # fmt: skip
    ended: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    calls.on_end.append(lambda c: None if ended.done() else ended.set_result(c))
    await transport.start()
    try:
        leg = await transport.call("+15551234", account="trunk", timeout=15)
        calls.start_call(leg, agent_name="echo")
        # The echo agent has spoken the whole prompt back (plus the jitter buffer's delay).
        await wait_for(
            lambda: True if leg.samples_played >= len(prompt) else None,
            len(prompt) / 8000 + 10, "the echo of the prompt",
        )  # fmt: skip
        await leg.hangup("local")
        call = await asyncio.wait_for(ended, 10)
        assert call.leg.end_reason in ("local", "local_bye"), call.leg.end_reason
    finally:
        await transport.shutdown(grace=3.0)
        await calls.shutdown(3.0)

    assert await asyncio.to_thread(uas.wait, 10) == 0, uas.describe()
    assert uas.stats().counter("SuccessfulCall(C)") == 1, uas.describe()

    first, second = _invites(uas.messages_path.read_text(errors="replace"))
    assert "Proxy-Authorization" not in first
    assert re.search(r"^CSeq: 2 INVITE", second, re.M), second
    call_ids = {re.search(r"^Call-ID: (\S+)", m, re.M).group(1) for m in (first, second)}  # type: ignore[union-attr]
    assert len(call_ids) == 1, "the authenticated INVITE must keep the Call-ID"
    request_uri = second.split(" ")[1]
    assert request_uri == "sip:+15551234@trunk.test"
    assert re.search(r"^From: <sip:alice@trunk\.test>;tag=", second, re.M), second
    header = re.search(r"^Proxy-Authorization: Digest (.*)$", second, re.M)
    assert header is not None, second
    f = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^\s,]+)', header.group(1))}
    assert (f["username"], f["realm"], f["uri"]) == ("alice-auth", "trunk.test", request_uri)
    assert f["response"] == digest_response(
        algorithm="MD5", username="alice-auth", password=PASSWORD, realm="trunk.test",
        method="INVITE", uri=request_uri, nonce=f["nonce"], cnonce=f["cnonce"], nc=f["nc"],
        qop="auth",
    ), "the credentials do not match the password"  # fmt: skip

    pcap = cap.stop()
    back = read_rtp(
        pcap, f"udp.srcport >= {rtp_lo} && udp.srcport <= {rtp_hi} && udp.dstport == {uas_mp}"
    )
    pcmu = [r for r in back if r.pt == 0]
    assert pcmu, f"no PCMU from callbridge to the trunk (payload types: { ({r.pt for r in back}) })"
    heard = rtp_to_pcm(pcmu, 0)
    sim = audio.compare(prompt, heard)
    print(f"agent audio at SIPp vs prompt: {sim}, level {audio.dbfs(heard):.1f} dBFS")
    assert audio.dbfs(heard) > -40, "the agent's audio is silence"
    assert len(heard) >= 0.8 * len(prompt), f"the agent spoke only {len(heard) / 8000:.1f} s"
    # The loudness contour is the prompt's: speech, the agent's echo of it. (The sample-exact
    # match is test_outbound_call's business; under CPU load the jitter buffer may slip a frame.)
    assert sim.env_corr >= 0.8, f"SIPp did not hear the agent speak: {sim}"
