"""Issue 9 acceptance: a flood and password guessing against a running gateway must not hurt
live calls, and must not lock out legitimate callers.

- 10 SIPp echo calls with RTP from 127.0.0.1, then a flooder (peerlib/flooder.py, its own
  process) sends 1,000 INVITE/s from 127.0.0.2 for 10 s. The live calls' media loss and
  concealment stay below 1 %, the flooder gets 503s and is banned (most of its INVITEs get no
  answer at all), a new caller from 127.0.0.3 gets through during the flood, and the
  gateway's RSS comes back within 10 % of its pre-flood value once the flood's calls are over.
- SIPp guesses a digest password 200 times from 127.0.0.2; it is cut off after a handful of
  403s, and the right password from 127.0.0.3 still gets a call.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import audio
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uac
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

FLOODER = Path(__file__).resolve().parent / "peerlib" / "flooder.py"
LIVE_CALLS = 10
HOLD_MS = 50_000  # the live calls outlast the flood's admitted calls (no ACK: 64*T1 = 32 s)
SPEECH = "Live call audio during the flood. The quick brown fox jumps over the lazy dog."


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def from_source(ip: str):  # type: ignore[no-untyped-def]
    return lambda ev: str(ev.get("remote_addr", "")).startswith(ip + ":")


def test_a_flood_does_not_hurt_live_calls_and_the_flooder_is_banned(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("sipp", "espeak-ng", "sox")
    gateway = gateway_factory(rtp_ports=160, extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo"})
    speech = audio.synthesize_speech(SPEECH, tmp_path / "speech.wav", repeat=14)
    pcm = audio.read_wav(speech)[: HOLD_MS * 8]
    assert len(pcm) == HOLD_MS * 8, len(pcm)
    media = tmp_path / "media.pcap"
    wav_to_pcap(audio.write_wav(tmp_path / "media.wav", pcm), media, codec="pcmu")

    uac_mp, _ = PORT_BLOCKS.take(4 * LIVE_CALLS + 8)
    live = start_uac(
        registry, "live", "uac_play.xml", target=gateway.sip_addr, service="echo",
        sip_port=free_port(), media_port=uac_mp, calls=LIVE_CALLS, rate=10, limit=LIVE_CALLS,
        hold_ms=HOLD_MS, timeout_s=120, files={"media.pcap": media},
    )  # fmt: skip
    gateway.wait_for("call.started", timeout=15, count=LIVE_CALLS)
    rss_before = rss_kib(gateway.proc.pid)

    target = f"{gateway.sip_addr[0]}:{gateway.sip_addr[1]}"
    flooder = registry.start(
        "flooder",
        [sys.executable, str(FLOODER), target, "--source", "127.0.0.2", "--rate", "1000",
         "--seconds", "10", "--user", "echo"],
    )  # fmt: skip
    ban = gateway.wait_for("sip.source_banned", timeout=10, source="127.0.0.2")[0]
    assert ban["cause"] == "flood", ban

    # A new caller from another address, while the flood goes on (it lasts 10 s).
    newcomer = start_uac(
        registry, "newcomer", "uac_play.xml", target=gateway.sip_addr, service="echo",
        sip_port=free_port(), media_port=PORT_BLOCKS.take(8)[0], hold_ms=1000, timeout_s=20,
        files={"media.pcap": media}, local_ip="127.0.0.3",
    )  # fmt: skip
    assert newcomer.wait(30) == 0, newcomer.describe()
    assert flooder.running(), "the newcomer's call should have happened during the flood"
    assert flooder.wait(30) == 0, flooder.stderr_text()
    report = json.loads(flooder.stdout_text().strip().splitlines()[-1])
    print(f"flooder: {report}")
    answers = report["answers"]
    assert report["sent"] == 10_000
    assert answers.get("503", 0) >= 1, report  # refused first (RFC 3261 §21.5.4) ...
    assert answers.get("100", 0) + answers.get("503", 0) < 200, report  # ... then dropped
    assert len(gateway.events("sip.source_banned")) == 1  # logged once per ban

    # The flood's admitted calls (its first burst) end when their 200 is never ACKed.
    flood_calls = gateway.events("call.started", predicate=None)
    flood_ids = {ev["call_id"] for ev in flood_calls if from_source("127.0.0.2")(ev)}
    assert len(flood_ids) <= 25, len(flood_ids)
    ended = gateway.wait_for(
        "call.ended", lambda ev: ev["call_id"] in flood_ids, timeout=45, count=len(flood_ids)
    )
    assert len(ended) == len(flood_ids)
    rss_after = rss_kib(gateway.proc.pid)
    print(f"gateway RSS: {rss_before} KiB before the flood, {rss_after} KiB after")
    assert rss_after <= rss_before * 1.10, (rss_before, rss_after)

    assert live.wait(60) == 0, live.describe()
    assert live.stats().counter("SuccessfulCall(C)") == LIVE_CALLS, live.describe()
    live_ids = {
        ev["call_id"] for ev in gateway.events("call.started") if from_source("127.0.0.1")(ev)
    }
    assert len(live_ids) == LIVE_CALLS
    live_ended = gateway.wait_for(
        "call.ended", lambda ev: ev["call_id"] in live_ids, timeout=15, count=LIVE_CALLS
    )
    worst = []
    for ev in live_ended:
        rtp_in = int(ev["rtp_in"])
        damaged = int(ev.get("concealed", 0)) + int(ev.get("lost", 0))
        assert rtp_in >= 0.95 * HOLD_MS / 20, ev
        worst.append((damaged / rtp_in, ev["call_id"], damaged, rtp_in, ev.get("late")))
    worst.sort(reverse=True)
    print(f"live calls, worst media damage (share, id, concealed+lost, rtp_in, late): {worst[:3]}")
    assert worst[0][0] < 0.01, worst
    gateway.assert_no_crash()


GUESSES = 200
AUTH_ENV = {
    "CALLBRIDGE_DEFAULT_AGENT": "echo",
    "CALLBRIDGE_SIP_AUTH_ROUTES": "*",
    "CALLBRIDGE_SIP_AUTH_USERS": "alice:s3cret",
    "CALLBRIDGE_SIP_AUTH_ALGORITHMS": "MD5",  # what SIPp 3.6 answers
}


def test_password_guessing_is_cut_off_and_the_right_password_still_works(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp")
    gateway = gateway_factory(extra_env=AUTH_ENV)
    guesser = start_uac(
        registry, "guesser", "uac_auth.xml", target=gateway.sip_addr, service="echo",
        sip_port=free_port(), media_port=PORT_BLOCKS.take(8)[0], calls=GUESSES, rate=50,
        timeout_s=12, extra=["-au", "alice", "-ap", "guess", "-recv_timeout", "2000"],
        local_ip="127.0.0.2",
    )  # fmt: skip
    ban = gateway.wait_for("sip.source_banned", timeout=15, source="127.0.0.2")[0]
    assert ban["cause"] == "auth", ban
    guesser.wait(30)  # it fails: its later guesses are never answered
    log = guesser.messages_path.read_text(errors="replace")
    sent = len(re.findall(r"message sent \(\d+ bytes\):\s*\n\s*INVITE sip:", log))
    # Calls answered 403 (by Call-ID: the last 403 is retransmitted, its ACK being dropped).
    refused = len(set(re.findall(r"\nSIP/2.0 403[^\n]*\n(?:[^\n]+\n)*?Call-ID:\s*(\S+)", log)))
    print(f"guesser: {sent} INVITEs sent, {refused} calls answered 403")
    assert sent >= GUESSES, "the guesser should have kept trying"
    assert 1 <= refused <= 5, refused  # limits.auth_failures = 5
    assert len(gateway.events("call.auth_failed")) == refused
    assert gateway.events("call.started") == []

    good = start_uac(
        registry, "good", "uac_auth.xml", target=gateway.sip_addr, service="echo",
        sip_port=free_port(), media_port=PORT_BLOCKS.take(8)[0], timeout_s=20,
        extra=["-au", "alice", "-ap", "s3cret", "-d", "500"], local_ip="127.0.0.3",
    )  # fmt: skip
    assert good.wait(30) == 0, good.describe()
    started = gateway.wait_for("call.started", timeout=5)[0]
    assert started["auth_user"] == "alice"
    gateway.assert_no_crash()
