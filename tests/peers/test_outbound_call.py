"""Acceptance 3: `callbridge call sip:...` places a call to a SIPp UAS that plays a prompt;
the echo agent sends the prompt back, callbridge hangs up after --duration and exits 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import require_tools
from .peerlib import audio
from .peerlib.callbridge import GatewayConfig, start_outbound_call
from .peerlib.capture import read_rtp, rtp_to_pcm, start_capture
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uas
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

PROMPT = "Welcome to the outbound test. Please listen carefully to this prompt."
DURATION_S = 8.0


def test_outbound_call_echoes_the_prompt(registry: ProcessRegistry, tmp_path: Path) -> None:
    require_tools("sipp", "tshark", "espeak-ng", "sox")
    prompt_wav = audio.synthesize_speech(PROMPT, tmp_path / "prompt.wav")
    prompt = audio.read_wav(prompt_wav)
    assert len(prompt) / 8000 < DURATION_S - 1.5, "the prompt must fit in the call"
    media = tmp_path / "media.pcap"
    wav_to_pcap(prompt_wav, media, codec="pcmu")

    uas_sip = free_port()
    uas_mp, _ = PORT_BLOCKS.take(8)
    cfg = GatewayConfig.allocate(tmp_path / "callbridge-data", PORT_BLOCKS.take(40))
    rtp_lo, rtp_hi = cfg.rtp_range
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (port {uas_sip} or port {cfg.sip_port} or portrange {rtp_lo}-{rtp_hi} "
        f"or portrange {uas_mp}-{uas_mp + 7})",
    )
    uas = start_uas(
        registry, "uas", "uas_play.xml", sip_port=uas_sip, media_port=uas_mp,
        timeout_s=60, files={"media.pcap": media},
    )  # fmt: skip
    cb = start_outbound_call(
        registry, cfg, f"sip:echo@127.0.0.1:{uas_sip}", agent="echo", duration_s=DURATION_S
    )
    rc = cb.wait_exit(DURATION_S + 25)
    cb.assert_no_crash()
    assert rc == 0, f"callbridge call exited {rc}:\n{cb.stderr_tail()}"
    # callbridge hung up: the UAS got its BYE (uas_play would otherwise wait 60 s).
    assert uas.wait(10) == 0, uas.describe()
    assert uas.stats().counter("SuccessfulCall(C)") == 1, uas.describe()

    started = cb.events("call.started")
    assert len(started) == 1, started
    assert started[0].get("direction") == "outbound", started[0]
    assert started[0].get("agent") == "echo", started[0]
    ended = cb.events("call.ended", call_id=started[0]["call_id"])
    assert len(ended) == 1, ended

    pcap = cap.stop()
    # uas_play answers with [auto_media_port]: call 1 receives on -mp itself.
    back = read_rtp(
        pcap, f"udp.srcport >= {rtp_lo} && udp.srcport <= {rtp_hi} && udp.dstport == {uas_mp}"
    )
    pcmu = [r for r in back if r.pt == 0]
    assert pcmu, (
        f"no PCMU from callbridge to the UAS (payload types seen: { ({r.pt for r in back}) })"
    )
    sim = audio.compare(prompt, rtp_to_pcm(pcmu, 0))
    print(f"RTP back vs prompt: {sim}")
    assert sim.ok(min_env=0.8, min_fine=0.8), f"callbridge did not send the prompt back: {sim}"
    # The call lasted about --duration (hung up by callbridge, not by a timeout).
    span = pcmu[-1].time - pcmu[0].time
    assert DURATION_S - 2 <= span <= DURATION_S + 2, f"RTP lasted {span:.1f} s"
