"""Acceptance 2: a real softphone (baresip, speech as its microphone) calls the echo agent
and hears its own speech back in its recording."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import require_tools
from .peerlib import audio
from .peerlib.baresip import BaresipConfig, BaresipCtl, start_baresip
from .peerlib.callbridge import CallbridgeProcess
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port, free_port_pair

pytestmark = pytest.mark.peer

SPEECH = "Hello callbridge. This is baresip speaking. One two three four five."
CALL_SECONDS = 10.0


def test_baresip_hears_its_speech_echoed(
    registry: ProcessRegistry, gateway: CallbridgeProcess, tmp_path: Path
) -> None:
    require_tools("baresip", "espeak-ng", "sox")
    ref_wav = audio.synthesize_speech(SPEECH, tmp_path / "speech.wav")
    # aufile hangs up at EOF: pad the microphone well past the call length.
    mic_wav = audio.synthesize_speech(SPEECH, tmp_path / "mic.wav", pad_after_s=CALL_SECONDS + 30)
    sip_port = free_port_pair()
    ctrl_port = free_port()
    while ctrl_port in (sip_port, sip_port + 1):  # baresip also binds TCP SIP and TLS SIP+1
        ctrl_port = free_port()
    cfg = BaresipConfig(
        confdir=tmp_path / "baresip", user="alice", sip_port=sip_port, ctrl_port=ctrl_port,
        rtp_range=PORT_BLOCKS.take(20), source_wav=mic_wav,
    )  # fmt: skip
    bs = start_baresip(registry, "baresip", cfg, lifetime_s=int(CALL_SECONDS) + 40)
    gw_host, gw_port = gateway.sip_addr
    ctl = BaresipCtl.connect(ctrl_port)
    try:
        ctl.command("dial", f"sip:echo@{gw_host}:{gw_port}")
        ctl.wait_event("CALL_ESTABLISHED", 10)
        ctl.hold(CALL_SECONDS)  # fails if the call closes early
        ctl.command("hangup")
        ctl.wait_event("CALL_CLOSED", 5)
        ctl.command("quit")
    finally:
        ctl.close()
    assert bs.wait(10) == 0, bs.stdout_text()[-3000:]

    started = gateway.wait_for("call.started", timeout=2)
    assert len(started) == 1, started
    call = started[0]
    assert call.get("direction") == "inbound", call
    assert "alice" in str(call.get("remote_uri", "")), call
    assert call.get("agent") == "echo", call
    gateway.wait_for("call.ended", timeout=5, call_id=call["call_id"])

    recs = cfg.recordings("dec")
    assert len(recs) == 1, f"expected one -dec.wav recording, got {recs}"
    heard = audio.read_wav(recs[0])
    sim = audio.compare(audio.read_wav(ref_wav), heard)
    print(f"baresip recording vs speech: {sim}")
    assert sim.ok(min_env=0.8, min_fine=0.8), f"baresip did not hear its speech echoed: {sim}"
