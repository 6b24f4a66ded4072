"""Acceptance 4: 50 concurrent SIPp calls with RTP both ways for 20 s each: no failed call,
no retransmission storm, every call started and ended in the gateway's log."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import audio
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uac
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

CALLS = 50
HOLD_MS = 20_000
RATE = 25  # calls/s: all 50 are up after 2 s, so the peak concurrency is 50
SPEECH = "Load test audio. The quick brown fox jumps over the lazy dog."


def test_fifty_concurrent_calls_with_rtp(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("sipp", "espeak-ng", "sox")
    gateway = gateway_factory(rtp_ports=4 * CALLS + 40)
    # Speech repeated and cut to the hold time: RTP for all 20 s of each call, then BYE.
    speech = audio.synthesize_speech(SPEECH, tmp_path / "speech.wav", repeat=6)
    pcm = audio.read_wav(speech)[: HOLD_MS * 8]
    assert len(pcm) == HOLD_MS * 8, len(pcm)
    wav = audio.write_wav(tmp_path / "media.wav", pcm)
    media = tmp_path / "media.pcap"
    wav_to_pcap(wav, media, codec="pcmu")

    uac_mp, _ = PORT_BLOCKS.take(4 * CALLS + 8)  # [auto_media_port] = -mp + 4 * (call# - 1)
    uac = start_uac(
        registry, "uac", "uac_play.xml", target=gateway.sip_addr, service="echo",
        sip_port=free_port(), media_port=uac_mp, calls=CALLS, rate=RATE, limit=CALLS,
        hold_ms=HOLD_MS, timeout_s=60, files={"media.pcap": media},
    )  # fmt: skip
    rc = uac.wait(70)
    stats = uac.stats()
    assert rc == 0, uac.describe()
    assert stats.counter("TotalCallCreated") == CALLS, stats.summary()
    assert stats.counter("SuccessfulCall(C)") == CALLS, stats.summary()
    assert stats.counter("FailedCall(C)") == 0, stats.summary()
    assert stats.counter("Retransmissions(C)") == 0, f"retransmissions: {stats.summary()}"
    assert stats.peak_concurrent == CALLS, stats.summary()

    started = gateway.wait_for("call.started", timeout=5, count=CALLS)
    ended = gateway.wait_for("call.ended", timeout=15, count=CALLS)
    assert len(started) == CALLS and len(ended) == CALLS, (len(started), len(ended))
    started_ids = {ev["call_id"] for ev in started}
    assert started_ids == {ev["call_id"] for ev in ended}
    sip_ids = {ev.get("sip_call_id") for ev in started}
    assert sip_ids == {f"{n}-{uac.proc.pid}@127.0.0.1" for n in range(1, CALLS + 1)}

    # ~HOLD_MS / 20 ms = 1000 packets each way per call; allow 10 % for setup/teardown edges.
    expected = HOLD_MS // 20
    low = []
    for ev in ended:
        missing = [k for k in ("rtp_in", "rtp_out") if k not in ev]
        assert not missing, f"call.ended lacks {missing}: {ev}"
        if int(ev["rtp_in"]) < 0.9 * expected or int(ev["rtp_out"]) < 0.9 * expected:
            low.append((ev["call_id"], ev["rtp_in"], ev["rtp_out"]))
    rtp_in = [int(ev["rtp_in"]) for ev in ended]
    rtp_out = [int(ev["rtp_out"]) for ev in ended]
    print(f"sipp: {stats.summary()}")
    print(
        f"gateway rtp_in min/max {min(rtp_in)}/{max(rtp_in)}, rtp_out min/max {min(rtp_out)}/{max(rtp_out)}"
    )
    assert not low, f"calls with < 90 % of the expected {expected} packets (id, in, out): {low}"
    gateway.assert_no_crash()


def test_sigint_sends_bye_to_live_calls(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """The run contract: SIGINT shuts the gateway down gracefully, hanging up (BYE) every
    live call, and it exits 0. The SIPp UAC waits for the callee's BYE (its own fallback
    BYE only after 60 s, far beyond the deadlines here)."""
    require_tools("sipp", "espeak-ng", "sox")
    calls = 5
    gateway = gateway_factory(rtp_ports=40)
    wav = audio.synthesize_speech(SPEECH, tmp_path / "speech.wav", pad_after_s=30)
    media = tmp_path / "media.pcap"
    wav_to_pcap(wav, media, codec="pcmu")
    uac_mp, _ = PORT_BLOCKS.take(4 * calls + 8)
    uac = start_uac(
        registry, "uac", "uac_play_wait_bye.xml", target=gateway.sip_addr, service="echo",
        sip_port=free_port(), media_port=uac_mp, calls=calls, rate=10, limit=calls,
        timeout_s=60, files={"media.pcap": media}, extra=["-recv_timeout", "60000"],
    )  # fmt: skip
    started = gateway.wait_for("call.started", timeout=10, count=calls)
    gateway.proc.signal(signal.SIGINT)
    assert gateway.wait_exit(15) == 0, gateway.stderr_tail()
    assert uac.wait(15) == 0, uac.describe()
    assert uac.stats().counter("SuccessfulCall(C)") == calls, uac.describe()
    ended = gateway.events("call.ended")
    assert {ev["call_id"] for ev in ended} == {ev["call_id"] for ev in started}
    log = uac.messages_path.read_text(errors="replace")
    byes = len(re.findall(r"message received \[\d+\] bytes :\s*\nBYE sip:", log))
    assert byes >= calls, f"SIPp received {byes} BYE requests for {calls} calls"
    gateway.assert_no_crash()
